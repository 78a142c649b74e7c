//! `loadtest`: see the crate docs (`cargo run --release -p loadtest -- --help`).

fn main() {
    let cfg = match loadtest::Config::from_args(std::env::args_os()) {
        Ok(c) => c,
        Err(e) => {
            // clap formats usage errors (and --help, which exits 0).
            e.exit();
        }
    };
    match loadtest::run(&cfg) {
        Ok(report) => {
            if cfg.json {
                println!("{}", report.json());
            } else {
                print!("{}", report.wrk_text(&cfg));
            }
            if let Some(path) = &cfg.plot {
                if let Err(e) = report.plot(path) {
                    eprintln!("loadtest: {e}");
                    std::process::exit(1);
                }
            }
            if let Some(path) = &cfg.hgrm {
                if let Err(e) = std::fs::write(path, report.hgrm()) {
                    eprintln!("loadtest: writing {}: {e}", path.display());
                    std::process::exit(1);
                }
            }
        }
        Err(e) => {
            eprintln!("loadtest: {e}");
            std::process::exit(1);
        }
    }
}
