//! Compiles `proto/hearth.proto` with protox (pure Rust), so no system `protoc` is needed, and
//! keeps the encoded descriptor set for the master's gRPC reflection service.

use prost::Message;
use std::{env, fs, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/hearth.proto");
    let fds = protox::compile(["hearth.proto"], ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out.join("hearth_descriptor.bin"), fds.encode_to_vec())?;
    // The master keeps these in its state file.
    let stored = [
        "hearth.v1.DriverSpec",
        "hearth.v1.ApplicationSpec",
        "hearth.v1.DriverStateChange",
        "hearth.v1.DriverState",
        "hearth.v1.ApplicationState",
        "hearth.v1.ExecutorState",
        "hearth.v1.WorkerState",
    ];
    let mut builder = tonic_prost_build::configure().emit_rerun_if_changed(false);
    for path in stored {
        builder = builder.type_attribute(
            format!(".{path}"),
            "#[derive(serde::Serialize, serde::Deserialize)]",
        );
    }
    // Fields added after the first release: records written before them still read.
    for field in [
        "DriverSpec.queue",
        "DriverSpec.priority",
        "ApplicationSpec.queue",
        "ApplicationSpec.priority",
        "DriverSpec.time_limit_ms",
        "ApplicationSpec.time_limit_ms",
    ] {
        builder = builder.field_attribute(format!(".hearth.v1.{field}"), "#[serde(default)]");
    }
    builder.compile_fds(fds)?;
    Ok(())
}
