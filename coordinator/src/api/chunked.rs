//! `SubmitRunChunked`: a `SubmitRunRequest` over the 16 MiB message limit, sent as chunks of
//! its encoding. The chunks are gathered (bounded by the size the first one declares), decoded,
//! and the request goes the way a `SubmitRun` goes: validated whole, then stored in one
//! transaction. A stream that breaks off stores nothing.

use futures_util::StreamExt;
use prost::Message;
use tonic::{Request, Response, Status, Streaming};

use super::*;
use swarm_proto::chunked::MAX_CHUNKED_SUBMIT_BYTES;

/// Chunked requests gathered at once on one coordinator (each up to 256 MiB); others wait
/// their turn, held back by HTTP/2 flow control.
pub(super) const CONCURRENT_CHUNKED: usize = 2;
/// A client that sends nothing for this long has gone (its turn goes to the next one)...
const CHUNK_IDLE: std::time::Duration = std::time::Duration::from_secs(30);
/// ...and so has one that trickles its chunks for longer than this.
const GATHER_MAX: std::time::Duration = std::time::Duration::from_secs(600);

impl SwarmApi {
    pub(super) async fn submit_chunked(
        &self,
        req: Request<Streaming<pb::SubmitRunChunk>>,
    ) -> Result<Response<pb::SubmitRunResponse>, Status> {
        let who = principal(&req);
        who.require(Access::Submit)?;
        let route = self.route(&req).await?;
        let _turn = self.chunked.acquire().await.map_err(|_| Status::unavailable("the coordinator is stopping"))?;
        let (metadata, extensions, stream) = req.into_parts();
        let bytes = tokio::time::timeout(GATHER_MAX, gather(stream))
            .await
            .unwrap_or_else(|_| Err(ApiError::invalid("data", format!("the chunks took longer than {GATHER_MAX:?}"))))
            .map_err(|e| to_status(&e))?;
        let result = match route {
            Route::Leader(mut leader, addr) => {
                // The leader validates and records it; the chunks go on as they came.
                let chunks = futures_util::stream::iter(swarm_proto::chunked::chunks(&bytes));
                drop(bytes);
                let req = self.forward.request(Request::from_parts(metadata, extensions, chunks), &who);
                return leader.submit_run_chunked(req).await.map_err(|s| forward::failed(s, &addr));
            }
            Route::Here => match pb::SubmitRunRequest::decode(bytes.as_slice()) {
                Err(e) => {
                    Err(ApiError::invalid("data", format!("the chunks are not an encoded SubmitRunRequest: {e}")))
                }
                Ok(request) => {
                    drop(bytes);
                    self.submit(request, &who, MAX_CHUNKED_SUBMIT_BYTES as usize).await
                }
            },
        };
        let result = result.map(Response::new).map_err(|e| to_status(&e));
        let run_id = result.as_ref().map_or("", |r| r.get_ref().run_id.as_str());
        self.audit(&who, crate::audit::Action::Submit, run_id, &result, &[]);
        result
    }
}

/// The request's bytes from its chunks, checked against the size the first chunk declares.
async fn gather(mut stream: Streaming<pb::SubmitRunChunk>) -> Result<Vec<u8>, ApiError> {
    let mut next_chunk = async || {
        tokio::time::timeout(CHUNK_IDLE, stream.next())
            .await
            .unwrap_or_else(|_| Some(Err(Status::cancelled(format!("no chunk for {CHUNK_IDLE:?}")))))
    };
    let first = match next_chunk().await {
        None => return Err(ApiError::invalid("total_bytes", "the stream ended before its first chunk")),
        Some(chunk) => {
            chunk.map_err(|s| ApiError::invalid("data", format!("the stream broke off: {}", s.message())))?
        }
    };
    let total = first.total_bytes;
    if total == 0 {
        return Err(ApiError::invalid("total_bytes", "required in the first chunk (the request's size in bytes)"));
    }
    if total > MAX_CHUNKED_SUBMIT_BYTES {
        return Err(ApiError::ResourceExhausted(format!(
            "total_bytes: the request has {total} bytes; the limit is {MAX_CHUNKED_SUBMIT_BYTES} bytes (256 MiB)"
        )));
    }
    // Grown as chunks come: a declared size alone reserves no more than one message's worth.
    let mut bytes = Vec::with_capacity((total as usize).min(crate::MAX_SUBMIT_BYTES));
    let mut next: Option<Result<pb::SubmitRunChunk, Status>> = Some(Ok(first));
    let mut index = 0usize;
    while let Some(chunk) = next {
        let chunk = chunk.map_err(|s: Status| {
            ApiError::invalid(
                "data",
                format!("the stream broke off after {} of {total} bytes: {}", bytes.len(), s.message()),
            )
        })?;
        if index > 0 && chunk.total_bytes != 0 && chunk.total_bytes != total {
            return Err(ApiError::invalid(
                "total_bytes",
                format!("chunk {index} says {} bytes; the first said {total}", chunk.total_bytes),
            ));
        }
        if (bytes.len() + chunk.data.len()) as u64 > total {
            return Err(ApiError::invalid(
                "data",
                format!("chunk {index} goes past the {total} bytes the first chunk declared"),
            ));
        }
        bytes.extend_from_slice(&chunk.data);
        index += 1;
        next = next_chunk().await;
    }
    if bytes.len() as u64 != total {
        return Err(ApiError::invalid(
            "data",
            format!("the stream ended after {} of the {total} bytes declared; nothing was stored", bytes.len()),
        ));
    }
    Ok(bytes)
}
