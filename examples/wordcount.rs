//! Counts words in text files: `word<TAB>count` lines, sorted by word.
//!
//! ```text
//! cargo run --release --example wordcount -- --input 'books/*.txt' --output counts.tsv
//! cargo run --release --example wordcount -- --input a.txt --input b.txt --workers 2
//! ```

use clap::Parser;
use riffle_engine::Pipeline;

/// Counts the words in text files.
#[derive(Parser, Debug)]
#[command(about = "Counts words in text files, writing word<TAB>count lines sorted by word.")]
struct Args {
    /// Text files to read: paths or globs (quote globs so the shell leaves them alone).
    /// Repeat for several.
    #[arg(long, required = true, value_name = "PATH_OR_GLOB")]
    input: Vec<String>,

    /// File to write; standard output if absent. It appears whole or not at all.
    #[arg(long, value_name = "FILE")]
    output: Option<std::path::PathBuf>,

    #[command(flatten)]
    run: riffle_timely::RunOptions,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let p = Pipeline::new();
    let counts = riffle_connectors::text::read_lines(&p, &args.input)
        .flat_map(|line| {
            line.split(|c: char| !c.is_alphanumeric() && c != '\'')
                .map(|w| w.trim_matches('\'').to_lowercase())
                .filter(|w| !w.is_empty())
                .collect::<Vec<_>>()
        })
        .named("ExtractWords")
        .count_per_element();
    let format = |(word, n): &(String, u64)| format!("{word}\t{n}");
    match &args.output {
        Some(path) => riffle_connectors::text::write_lines(&counts, path, format),
        None => riffle_connectors::stdout::print_lines(&counts, format),
    }
    riffle_timely::run(&p, &args.run)?;
    Ok(())
}
