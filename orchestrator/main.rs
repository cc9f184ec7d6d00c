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
    // Colour only for a person at a terminal: a log file or a shipper gets plain text.
    // Every line goes through the redactor, like all other output.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(orchestrator::redact::RedactingStderr)
        .with_target(false)
        .with_ansi(ansi);
    match cli.log_format {
        cli::LogFormat::Json => builder.json().flatten_event(true).init(),
        cli::LogFormat::Text => builder.init(),
    }
    orchestrator::wiring::install_crypto();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let code = rt.block_on(async {
        match cli::dispatch(cli).await {
            Ok(code) => code,
            Err(f) => {
                let message = orchestrator::redact::redact(&f.message);
                if message.contains('\n') {
                    eprintln!("{message}");
                } else {
                    eprintln!("error: {message}");
                }
                f.code
            }
        }
    });
    std::process::exit(code);
}
