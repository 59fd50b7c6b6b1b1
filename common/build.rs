//! Compiles `proto/hearth.proto` with protox (pure Rust), so no system `protoc` is needed, and
//! keeps the encoded descriptor set for the master's gRPC reflection service.

use prost::Message;
use std::{env, fs, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/hearth.proto");
    let fds = protox::compile(["hearth.proto"], ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out.join("hearth_descriptor.bin"), fds.encode_to_vec())?;
    // The master keeps these in its state file. Every field missing from a record (one written
    // before the field existed) reads as its default, so an upgraded master reads older files.
    let stored_messages = [
        "hearth.v1.DriverSpec",
        "hearth.v1.ApplicationSpec",
        "hearth.v1.DriverStateChange",
        "hearth.v1.ResourceAddresses",
    ];
    let stored_enums = [
        "hearth.v1.DriverState",
        "hearth.v1.ApplicationState",
        "hearth.v1.ExecutorState",
        "hearth.v1.WorkerState",
    ];
    let mut builder = tonic_prost_build::configure()
        .emit_rerun_if_changed(false)
        .codec_path("crate::codec::LeanCodec");
    for path in stored_messages {
        builder = builder.type_attribute(
            format!(".{path}"),
            "#[derive(serde::Serialize, serde::Deserialize)] #[serde(default)]",
        );
    }
    for path in stored_enums {
        builder = builder.type_attribute(
            format!(".{path}"),
            "#[derive(serde::Serialize, serde::Deserialize)]",
        );
    }
    builder.compile_fds(fds)?;
    Ok(())
}
