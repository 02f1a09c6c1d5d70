//! `riffle checkpoints`: what a job's checkpoint directory holds.

use clap::Subcommand;
use riffle_timely::checkpoint::{self, Store};

#[derive(Subcommand, Debug)]
pub enum CheckpointsCommand {
    /// Every checkpoint in DIR: id, when it was written, its workers, its size, and its
    /// state (complete, incomplete, or why its manifest does not read).
    List {
        /// The --checkpoint-dir of the job: a path, file:// or s3:// URL.
        dir: String,
    },
    /// One checkpoint: its steps and every worker's part of each, with their sizes.
    Show {
        /// The --checkpoint-dir of the job.
        dir: String,
        /// The checkpoint's id.
        id: u64,
    },
}

pub fn run(command: &CheckpointsCommand) -> anyhow::Result<()> {
    match command {
        CheckpointsCommand::List { dir } => {
            let store = Store::open(dir)?;
            let all = checkpoint::list(&store)?;
            if all.is_empty() {
                println!("no checkpoints in {dir}");
                return Ok(());
            }
            println!("{:>6}  {:<24}  {:>7}  {:>10}  state", "id", "written", "workers", "bytes");
            for c in all {
                match &c.manifest {
                    Ok(m) => println!(
                        "{:>6}  {:<24}  {:>7}  {:>10}  complete ({} parts)",
                        c.id,
                        time(m.written_ms),
                        m.workers,
                        c.bytes,
                        m.parts.len()
                    ),
                    Err(why) => println!("{:>6}  {:<24}  {:>7}  {:>10}  {why}", c.id, "-", "-", c.bytes),
                }
            }
        }
        CheckpointsCommand::Show { dir, id } => {
            let store = Store::open(dir)?;
            let m = checkpoint::read_manifest(&store, *id)?;
            println!("checkpoint {} of {dir}", m.id);
            println!("written {} by {} workers (format {})", time(m.written_ms), m.workers, m.format);
            for step in &m.steps {
                let parts: Vec<_> = m.parts.iter().filter(|p| p.step == step.index).collect();
                let bytes: u64 = parts.iter().map(|p| p.bytes).sum();
                println!("  {} '{}': {} parts, {bytes} bytes", step.kind, step.name, parts.len());
                for p in parts {
                    println!("    worker {:<4} {:>10} bytes  {}", p.worker, p.bytes, p.name);
                }
            }
        }
    }
    Ok(())
}

/// Milliseconds since the epoch as ISO-8601.
fn time(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map_or_else(
        |_| format!("{ms} ms"),
        |t| t.round(jiff::Unit::Second).map_or_else(|_| t.to_string(), |t| t.to_string()),
    )
}
