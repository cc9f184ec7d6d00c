//! The `orchestrator` binary: parses arguments, sets up logging, runs one command and
//! exits with its documented code.

use clap::Parser;
use orchestrator::cli::{self, exit};

fn main() {
    let parsed = cli::Cli::try_parse();
    let cli = match parsed {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { exit::USAGE } else { exit::OK };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).init();
    orchestrator::wiring::install_crypto();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let code = rt.block_on(async {
        match cli::dispatch(cli).await {
            Ok(code) => code,
            Err(f) => {
                if f.message.contains('\n') {
                    eprintln!("{}", f.message);
                } else {
                    eprintln!("error: {}", f.message);
                }
                f.code
            }
        }
    });
    std::process::exit(code);
}
