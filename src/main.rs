//! The `sagaflow` binary: parse the command line, load settings, set up logging, run.

use clap::Parser;
use opentelemetry_sdk::trace::SdkTracerProvider;
use sagaflow::cli::{self, Cli};
use sagaflow::config::{LogFormat, Settings};

/// mimalloc instead of glibc's malloc: a profile of the coordinator waking 20,000
/// sagas per second spent about 40 % of its samples in glibc's allocator
/// (`_int_malloc`, `malloc_consolidate`, `unlink_chunk`, `free`), from the many
/// short-lived JSON values, strings and vectors of each batch across tokio threads.
/// With mimalloc the coordinator needs about 20 % less CPU for the same 100,000
/// wake-ups (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Logs to stderr, and spans to OTLP when the `OTEL_*` variables ask for it
/// (`sagaflow::telemetry`); returns the tracer provider to flush at exit.
fn init_tracing(format: LogFormat) -> Option<SdkTracerProvider> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,sqlx=warn,lapin=warn,lapin::channel=off".into());
    let provider = match sagaflow::telemetry::provider_from_env() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("warning: spans are not exported: {e}");
            None
        }
    };
    let otel = provider.as_ref().map(sagaflow::telemetry::layer);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    match format {
        LogFormat::Json => registry.with(fmt.json()).init(),
        LogFormat::Text => registry.with(fmt).init(),
    }
    provider
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // `sagaflow dead-letters list | head` must end quietly when the reader goes away, as other
    // command-line tools do, instead of panicking on a broken pipe.
    // SAFETY: only restores the default disposition of SIGPIPE; no handler runs Rust code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let provider = init_tracing(settings.log_format);
    let outcome = cli::run(cli, settings).await;
    if let Some(p) = provider {
        // Flushes the spans still queued; the exporter blocks, so off the runtime's threads.
        let _ = tokio::task::spawn_blocking(move || p.shutdown()).await;
    }
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The last filter before a message leaves the process: no URL password, even
            // from an error that quotes one (docs/security.md, "Secrets").
            eprintln!("error: {}", sagaflow::redact::text(&format!("{e:#}")));
            // 3 lets scripts tell "no such saga" from other failures (1) and bad arguments
            // (2); `sagas start --wait` says how the saga ended (4-7, see NotCompleted).
            if e.downcast_ref::<cli::SagaNotFound>().is_some() {
                std::process::ExitCode::from(3)
            } else if let Some(n) = e.downcast_ref::<cli::NotCompleted>() {
                std::process::ExitCode::from(n.code)
            } else {
                std::process::ExitCode::FAILURE
            }
        }
    }
}
