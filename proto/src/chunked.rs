//! `SubmitRunChunked`'s framing: a `SubmitRunRequest` over the 16 MiB message limit travels as
//! chunks of its encoding, the first one saying the total.

use prost::Message;

use crate::pb;

/// Largest request a coordinator assembles from chunks.
pub const MAX_CHUNKED_SUBMIT_BYTES: u64 = 256 * 1024 * 1024;
/// Largest request `SubmitRun` decodes in one message; above it, clients send chunks.
pub const MAX_SUBMIT_BYTES: usize = 16 * 1024 * 1024;
/// The size of the chunks clients send.
pub const CHUNK_BYTES: usize = 4 * 1024 * 1024;

/// Whether `req` is too large for one `SubmitRun` message.
pub fn needs_chunks(req: &pb::SubmitRunRequest) -> bool {
    // A margin for the message's own framing.
    req.encoded_len() > MAX_SUBMIT_BYTES - 1024
}

/// `bytes` (an encoded request) as chunks of [`CHUNK_BYTES`], the first saying the total.
pub fn chunks(bytes: &[u8]) -> Vec<pb::SubmitRunChunk> {
    let total = bytes.len() as u64;
    bytes
        .chunks(CHUNK_BYTES)
        .enumerate()
        .map(|(i, data)| pb::SubmitRunChunk { data: data.to_vec(), total_bytes: if i == 0 { total } else { 0 } })
        .collect()
}

/// `req` as chunks.
pub fn request_chunks(req: &pb::SubmitRunRequest) -> Vec<pb::SubmitRunChunk> {
    chunks(&req.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_reassemble_to_the_request_and_only_the_first_says_the_total() {
        let spec = pb::RunSpec { name: "x".repeat(9 * 1024 * 1024), ..Default::default() };
        let req = pb::SubmitRunRequest { spec: Some(spec), idempotency_key: "k".into(), ..Default::default() };
        let parts = request_chunks(&req);
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0].total_bytes, req.encoded_len() as u64);
        assert!(parts[1..].iter().all(|c| c.total_bytes == 0));
        let bytes: Vec<u8> = parts.iter().flat_map(|c| c.data.iter().copied()).collect();
        assert_eq!(pb::SubmitRunRequest::decode(bytes.as_slice()).expect("decodes"), req);
        assert!(!needs_chunks(&req));
    }
}
