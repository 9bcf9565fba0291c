//! A loopback TCP balancer in front of several servers, as a Kubernetes Service or a compose
//! port in front of every coordinator: each new connection goes to the next backend in turn
//! (one that refuses is skipped), and counts per backend say who got what.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// See the module docs. Dropping it stops accepting; open connections end with their peers.
pub struct Balancer {
    addr: SocketAddr,
    counts: Arc<Vec<AtomicUsize>>,
    accept: JoinHandle<()>,
}

impl Balancer {
    /// A balancer on a free loopback port over `backends`.
    pub async fn start(backends: Vec<SocketAddr>) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let counts: Arc<Vec<AtomicUsize>> = Arc::new(backends.iter().map(|_| AtomicUsize::new(0)).collect());
        let accept = tokio::spawn({
            let counts = counts.clone();
            async move {
                let mut next = 0usize;
                while let Ok((mut client, _)) = listener.accept().await {
                    let mut server = None;
                    for _ in 0..backends.len() {
                        let i = next % backends.len();
                        next += 1;
                        if let Ok(s) = TcpStream::connect(backends[i]).await {
                            counts[i].fetch_add(1, Ordering::Relaxed);
                            server = Some(s);
                            break;
                        }
                    }
                    // No backend answers: the client sees its connection closed.
                    let Some(mut server) = server else { continue };
                    let _ = (client.set_nodelay(true), server.set_nodelay(true));
                    tokio::spawn(async move {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    });
                }
            }
        });
        Ok(Self { addr, counts, accept })
    }

    /// The URL clients connect to.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Connections each backend got so far.
    pub fn counts(&self) -> Vec<usize> {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect()
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}
