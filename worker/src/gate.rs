//! The worker's side of the model gateway: before calling an endpoint the coordinator governs,
//! ask it for a permit and wait for the grant; give the permit back after the call with the
//! tokens used, or with the pause a 429 asked for.
//!
//! Requests outlive connections: on every new stream the coordinator's welcome says which
//! endpoints it governs, and the worker asks again for everything still waiting (the new
//! leader knows nothing of the old one's queue). An endpoint the new coordinator does not
//! govern is called at once. A permit granted by an earlier connection is simply used; its
//! release goes to whoever listens now, which ignores an id it never granted.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use swarm_core::agent::Usage;
use swarm_proto::convert::duration_us;
use swarm_proto::pb;
use tokio::sync::{mpsc, oneshot};

/// What a model call asks the gateway for.
#[derive(Clone, Debug, Default)]
pub struct PermitAsk {
    pub endpoint: String,
    pub prompt_chars: u64,
    pub max_tokens: u32,
    pub priority: u32,
    pub orchestrator: bool,
    pub critical_path: u64,
}

#[derive(Default)]
struct State {
    governed: HashSet<String>,
    out: Option<mpsc::Sender<pb::WorkerMessage>>,
    next_id: u64,
    /// Asks not yet answered; the answer is true for a grant, false for "not governed".
    waiting: HashMap<u64, (pb::PermitRequest, oneshot::Sender<bool>)>,
}

/// The worker's gate. One per worker; cheap to share.
#[derive(Default)]
pub struct Gate {
    state: Mutex<State>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gate")
    }
}

fn send(out: &mpsc::Sender<pb::WorkerMessage>, permits: pb::ModelPermits) {
    let msg = pb::WorkerMessage { msg: Some(pb::worker_message::Msg::Permits(permits)) };
    if let Err(mpsc::error::TrySendError::Full(msg)) = out.try_send(msg) {
        let out = out.clone();
        tokio::spawn(async move {
            let _ = out.send(msg).await;
        });
    }
}

impl Gate {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new stream's welcome (`gateway_endpoints`): these endpoints need permits, asked for on `out`. What
    /// waits for a governed endpoint is asked for again; the rest goes at once.
    pub(crate) fn configure(&self, endpoints: Vec<String>, out: mpsc::Sender<pb::WorkerMessage>) {
        let mut s = self.lock();
        s.governed = endpoints.into_iter().collect();
        let free: Vec<u64> =
            s.waiting.iter().filter(|(_, (r, _))| !s.governed.contains(&r.endpoint)).map(|(id, _)| *id).collect();
        for id in free {
            if let Some((_, tx)) = s.waiting.remove(&id) {
                let _ = tx.send(false);
            }
        }
        let acquire: Vec<pb::PermitRequest> = s.waiting.values().map(|(r, _)| r.clone()).collect();
        if !acquire.is_empty() {
            send(&out, pb::ModelPermits { acquire, release: vec![] });
        }
        s.out = Some(out);
    }

    /// The stream ended: asks wait for the next one.
    pub(crate) fn disconnected(&self) {
        self.lock().out = None;
    }

    /// Permits granted.
    pub(crate) fn granted(&self, ids: &[u64]) {
        let mut s = self.lock();
        for id in ids {
            if let Some((_, tx)) = s.waiting.remove(id) {
                let _ = tx.send(true);
            }
        }
    }

    /// Waits for a permit to call `ask.endpoint` (at once if it is not governed). Dropping the
    /// future gives the wait up.
    pub async fn acquire(self: &Arc<Self>, ask: PermitAsk) -> Permit {
        let (id, rx) = {
            let mut s = self.lock();
            if !s.governed.contains(&ask.endpoint) {
                return Permit { gate: self.clone(), id: None };
            }
            s.next_id += 1;
            let id = s.next_id;
            let request = pb::PermitRequest {
                id,
                endpoint: ask.endpoint,
                prompt_chars: ask.prompt_chars,
                max_tokens: ask.max_tokens,
                priority: ask.priority,
                orchestrator: ask.orchestrator,
                critical_path: ask.critical_path,
            };
            let (tx, rx) = oneshot::channel();
            if let Some(out) = &s.out {
                send(out, pb::ModelPermits { acquire: vec![request.clone()], release: vec![] });
            }
            s.waiting.insert(id, (request, tx));
            (id, rx)
        };
        // Until granted, dropping this gives the wait up (and whatever was granted meanwhile).
        let mut permit = Permit { gate: self.clone(), id: Some(id) };
        if !rx.await.unwrap_or(false) {
            // No longer governed: called freely, and nobody listening now knows the id.
            permit.id = None;
        }
        permit
    }

    fn release(&self, id: u64, release: pb::PermitRelease) {
        let mut s = self.lock();
        s.waiting.remove(&id);
        if let Some(out) = &s.out {
            send(out, pb::ModelPermits { acquire: vec![], release: vec![release] });
        }
    }
}

/// A granted permit (or the right to call an ungoverned endpoint). Give it back with
/// [`Permit::settle`]; dropped unsettled, it is given back unused.
pub struct Permit {
    gate: Arc<Gate>,
    id: Option<u64>,
}

impl Permit {
    /// True when the coordinator's gateway granted it (a 429 is then the gateway's to handle).
    pub fn gated(&self) -> bool {
        self.id.is_some()
    }

    /// Gives the permit back: the call was made and used `usage`, or was refused for the
    /// endpoint's rate limit with this pause.
    pub fn settle(mut self, usage: Usage, throttled_for: Option<Duration>) {
        if let Some(id) = self.id.take() {
            let release = pb::PermitRelease {
                id,
                used: true,
                input_tokens: usage.input_tokens,
                output_tokens: usage.output_tokens,
                throttled_for: throttled_for.map(|d| duration_us(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))),
            };
            self.gate.release(id, release);
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.gate.release(id, pb::PermitRelease { id, ..Default::default() });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate() -> (Arc<Gate>, mpsc::Receiver<pb::WorkerMessage>) {
        let gate = Arc::new(Gate::default());
        let (tx, rx) = mpsc::channel(16);
        gate.configure(vec!["m".into()], tx);
        (gate, rx)
    }

    fn permits(msg: pb::WorkerMessage) -> pb::ModelPermits {
        match msg.msg {
            Some(pb::worker_message::Msg::Permits(p)) => p,
            other => panic!("not permits: {other:?}"),
        }
    }

    #[tokio::test]
    async fn an_ungoverned_endpoint_goes_at_once_and_a_governed_one_waits_for_its_grant() {
        let (gate, mut rx) = gate();
        let free = gate.acquire(PermitAsk { endpoint: "other".into(), ..PermitAsk::default() }).await;
        assert!(!free.gated());
        drop(free);
        assert!(rx.try_recv().is_err(), "nothing is said about an ungoverned call");
        let waiting = tokio::spawn({
            let gate = gate.clone();
            async move { gate.acquire(PermitAsk { endpoint: "m".into(), prompt_chars: 40, ..PermitAsk::default() }).await }
        });
        let asked = permits(rx.recv().await.expect("asked"));
        assert_eq!((asked.acquire[0].endpoint.as_str(), asked.acquire[0].prompt_chars), ("m", 40));
        gate.granted(&[asked.acquire[0].id]);
        let permit = waiting.await.expect("granted");
        assert!(permit.gated());
        permit.settle(Usage { input_tokens: 10, output_tokens: 5 }, None);
        let released = permits(rx.recv().await.expect("released"));
        assert_eq!(released.release[0].id, asked.acquire[0].id);
        assert!(released.release[0].used);
        assert_eq!((released.release[0].input_tokens, released.release[0].output_tokens), (10, 5));
    }

    #[tokio::test]
    async fn a_wait_survives_a_new_connection_and_is_asked_for_again() {
        let (gate, mut rx) = gate();
        let waiting = tokio::spawn({
            let gate = gate.clone();
            async move { gate.acquire(PermitAsk { endpoint: "m".into(), ..PermitAsk::default() }).await }
        });
        let first = permits(rx.recv().await.expect("asked")).acquire[0].id;
        gate.disconnected();
        let (tx, mut rx2) = mpsc::channel(16);
        gate.configure(vec!["m".into()], tx);
        assert_eq!(permits(rx2.recv().await.expect("asked again")).acquire[0].id, first);
        gate.granted(&[first]);
        assert!(waiting.await.expect("granted").gated());
    }

    #[tokio::test]
    async fn a_coordinator_that_governs_nothing_lets_waiting_calls_go_and_a_dropped_wait_is_given_back() {
        let (gate, mut rx) = gate();
        let waiting = tokio::spawn({
            let gate = gate.clone();
            async move { gate.acquire(PermitAsk { endpoint: "m".into(), ..PermitAsk::default() }).await }
        });
        let _ = rx.recv().await;
        let (tx, mut rx2) = mpsc::channel(16);
        gate.configure(vec![], tx);
        let permit = waiting.await.expect("let go");
        assert!(!permit.gated(), "called freely: a 429 is the model client's own to retry");
        drop(permit);
        assert!(rx2.try_recv().is_err(), "nothing to give back to a coordinator that never heard of it");
        // A wait abandoned (the attempt cancelled) is given back too.
        let (tx, mut rx3) = mpsc::channel(16);
        gate.configure(vec!["m".into()], tx);
        let abandoned = tokio::time::timeout(
            Duration::from_millis(20),
            gate.acquire(PermitAsk { endpoint: "m".into(), ..PermitAsk::default() }),
        )
        .await;
        assert!(abandoned.is_err());
        let asked = permits(rx3.recv().await.expect("asked")).acquire[0].id;
        let given_up = permits(rx3.recv().await.expect("given up")).release[0];
        assert_eq!((given_up.id, given_up.used), (asked, false));
        assert!(gate.lock().waiting.is_empty());
    }
}
