//! Requests over the decode limit get `RESOURCE_EXHAUSTED`, as the API documents, with the
//! limit named. tonic refuses them while decoding, before any handler runs (nothing of them
//! is kept), and answers `OUT_OF_RANGE`; this layer rewrites that one status. Its answer is
//! "trailers-only", so the status is in the response headers.

use tonic::codegen::http;

/// See the [module docs](self).
#[derive(Clone, Copy, Debug)]
pub struct OversizeLayer {
    /// The limit, for the message.
    pub limit: usize,
}

impl<S> tower_layer::Layer<S> for OversizeLayer {
    type Service = Oversize<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Oversize { inner, limit: self.limit }
    }
}

/// See [`OversizeLayer`].
#[derive(Clone, Debug)]
pub struct Oversize<S> {
    inner: S,
    limit: usize,
}

/// tonic's code and message for a message over `max_decoding_message_size`.
const OUT_OF_RANGE: &str = "11";
/// (percent-encoded, as in the header)
const TOO_LARGE: &str = "decoded%20message%20length%20too%20large";

impl<S, ReqBody, ResBody> tower_service::Service<http::Request<ReqBody>> for Oversize<S>
where
    S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let call = self.inner.call(req);
        let limit = self.limit;
        Box::pin(async move {
            let mut resp = call.await?;
            let headers = resp.headers_mut();
            let oversized = headers.get("grpc-status").is_some_and(|v| v == OUT_OF_RANGE)
                && headers.get("grpc-message").and_then(|v| v.to_str().ok()).is_some_and(|m| m.contains(TOO_LARGE));
            if oversized {
                let status = tonic::Status::resource_exhausted(format!(
                    "the request is too large; the limit is {limit} bytes ({} MiB) per message (a larger run is \
                     submitted in chunks with SubmitRunChunked, as `swarm submit` does)",
                    limit >> 20
                ));
                let _ = status.add_header(headers);
            }
            Ok(resp)
        })
    }
}
