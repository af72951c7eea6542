use clap::Parser;

fn main() {
    let cli = gram_bench::cli::Cli::parse();
    if let Err(e) = gram_bench::cli::run(cli) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
