//! The `riffle` command: benchmarks, and tools that need no pipeline code.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

mod bench;
mod checkpoints;
mod parquet;

/// mimalloc rather than the system allocator: every batch is a fresh buffer of tens of
/// kilobytes, and glibc's malloc hands such buffers back to the kernel and faults them in
/// again (page faults were the top of the profile of a two-process shuffle). The timely
/// baseline runs in this same binary, so the comparison stays fair.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Riffle's command-line tool.
#[derive(Parser, Debug)]
#[command(
    name = "riffle",
    version,
    about = "Riffle's command-line tool: benchmarks, and tools that need no pipeline code (Parquet files, checkpoints)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Benchmarks, printed with baselines measured in the same run.
    Bench {
        #[command(subcommand)]
        bench: Bench,
    },
    /// Lists a job's checkpoints, or shows one (--checkpoint-dir of a pipeline binary).
    Checkpoints {
        #[command(subcommand)]
        command: checkpoints::CheckpointsCommand,
    },
    /// Inspects Parquet files at a path or URL (file://, s3://, hdfs://; globs and
    /// prefixes). S3 credentials and endpoint come from the AWS_* environment variables.
    Parquet {
        #[command(subcommand)]
        command: parquet::ParquetCommand,
    },
}

#[derive(Subcommand, Debug)]
enum Bench {
    /// Shuffle throughput: record sizes x workers x processes x key skew x operation x
    /// codec, against raw timely and the loopback TCP ceiling. See docs/benchmarks.md.
    #[command(
        after_long_help = "On your own hosts, with a hosts.txt of two lines, 10.0.0.1:7400 and 10.0.0.2:7400:\n  \
        on 10.0.0.1:  riffle bench shuffle --quick --hostfile hosts.txt --process 0 --json out.json\n  \
        on 10.0.0.2:  riffle bench shuffle --hostfile hosts.txt --process 1"
    )]
    Shuffle(Box<bench::shuffle::ShuffleArgs>),
    /// One configuration in this process (started by `bench shuffle`).
    #[command(hide = true)]
    Member {
        #[arg(long)]
        spec: String,
        #[arg(long)]
        process: Option<usize>,
        #[arg(long)]
        hostfile: Option<PathBuf>,
    },
    /// Reads and discards one TCP connection (the other end of the TCP baseline).
    #[command(hide = true)]
    TcpSink {
        #[arg(long)]
        port: u16,
    },
}

fn main() -> anyhow::Result<()> {
    riffle_timely::init_logging();
    match Cli::parse().command {
        Command::Bench { bench: Bench::Shuffle(args) } => bench::shuffle::run(&args).map(drop),
        Command::Bench { bench: Bench::Member { spec, process, hostfile } } => {
            let spec = serde_json::from_str(&spec)?;
            let m = bench::member::run(&spec, process, hostfile)?;
            println!("{}", serde_json::to_string(&m)?);
            Ok(())
        }
        Command::Bench { bench: Bench::TcpSink { port } } => bench::shuffle::tcp_sink(port),
        Command::Parquet { command } => parquet::run(&command),
        Command::Checkpoints { command } => checkpoints::run(&command),
    }
}
