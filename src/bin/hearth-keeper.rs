//! `hearth-keeper`: the keeper of each driver and executor (see `hearth_worker::keeper`) as a
//! binary of its own. It takes the same arguments as `hearth __keep`; a worker starts it when
//! it lies beside its own executable, because it starts in a fraction of the time the whole
//! `hearth` binary takes to load (a worker starts one ahead of each launch, and a launch that
//! finds none ready waits for it).

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let code = match args.get(1) {
        Some(a) if a == hearth_worker::keeper::KEEP_ARG => hearth_worker::keeper::run(&args[2..]),
        _ => {
            eprintln!(
                "hearth-keeper is started by a Hearth worker for each process it runs, as \
                 `hearth-keeper {} DEADLINE_NS -- PROGRAM [ARGS...]`",
                hearth_worker::keeper::KEEP_ARG
            );
            2
        }
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
