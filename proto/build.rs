//! Generates the swarm.v1 messages and services, and the descriptor set for server reflection.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed=swarm");
    // No generated `connect` constructors: they would clash with the `WorkerService.Connect` RPC.
    tonic_prost_build::configure()
        .build_transport(false)
        // Artifact bytes are sliced, not copied.
        .bytes(".swarm.v1.ArtifactChunk.data")
        .file_descriptor_set_path(out.join("swarm_descriptor.bin"))
        .compile_protos(&["swarm/v1/swarm.proto", "swarm/v1/worker.proto"], &["."])?;
    Ok(())
}
