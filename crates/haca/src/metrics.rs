//! The process's Prometheus metrics: one registry ([`metrics`]) that the HTTP layer
//! (`server::ops`, which also serves `/metrics`), the LLM routes and the enclave registrar
//! record into. Per-node gauges are set from the node's state when `/metrics` is scraped.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::OnceLock;

pub(crate) type Labels = Vec<(&'static str, String)>;
pub(crate) type Hist = Family<Labels, Histogram, fn() -> Histogram>;

/// Every metric haca exports.
pub struct Metrics {
    pub(crate) registry: Registry,
    pub(crate) requests: Family<Labels, Counter>,
    pub(crate) latency: Hist,
    pub(crate) runs: Family<Labels, Counter>,
    pub(crate) tokens: Family<Labels, Counter>,
    pub(crate) batched_steps: Counter,
    pub(crate) batched_rows: Counter,
    pub(crate) payments: Family<Labels, Counter>,
    pub(crate) refused: Family<Labels, Counter>,
    pub(crate) in_flight: Gauge,
    pub(crate) enclave_heartbeats: Family<Labels, Counter>,
    pub(crate) outbox: Gauge,
    pub(crate) outbox_age: Gauge<f64, AtomicU64>,
    pub(crate) mempool: Gauge,
    pub(crate) height: Gauge,
    pub(crate) cases: Family<Labels, Gauge>,
}

fn latency_histogram() -> Histogram {
    // 1 ms .. ~65 s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 17,
    ))
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("haca");
        let m = Metrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            runs: Family::default(),
            tokens: Family::default(),
            batched_steps: Counter::default(),
            batched_rows: Counter::default(),
            payments: Family::default(),
            refused: Family::default(),
            in_flight: Gauge::default(),
            enclave_heartbeats: Family::default(),
            outbox: Gauge::default(),
            outbox_age: Gauge::default(),
            mempool: Gauge::default(),
            height: Gauge::default(),
            cases: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "http_requests",
            "HTTP requests answered, by route, method and status",
            m.requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to the answer's head, by route and execution mode (streams: to the first byte)",
            m.latency.clone(),
        );
        registry.register(
            "http_requests_in_flight",
            "Requests being served now",
            m.in_flight.clone(),
        );
        registry.register(
            "runs",
            "Runs answered with a receipt, by route and mode",
            m.runs.clone(),
        );
        registry.register(
            "llm_tokens",
            "LLM tokens served, by kind (prompt, completion)",
            m.tokens.clone(),
        );
        registry.register(
            "llm_batched_steps",
            "Local LLM steps that decoded two or more sequences at once (their vocabulary scored by haca)",
            m.batched_steps.clone(),
        );
        registry.register(
            "llm_batched_rows",
            "Sequences decoded in those steps (over llm_batched_steps: the mean batch)",
            m.batched_rows.clone(),
        );
        registry.register(
            "payments",
            "Payments by outcome: settled (x402 answer carried a settlement), required (402)",
            m.payments.clone(),
        );
        registry.register(
            "requests_refused",
            "Requests refused before their handler: rate_key, rate_ip (429), route_busy (503)",
            m.refused.clone(),
        );
        registry.register(
            "enclave_heartbeats",
            "Enclave heartbeats sent to the TEE registry, by outcome",
            m.enclave_heartbeats.clone(),
        );
        registry.register(
            "outbox_records",
            "Runs waiting in the outbox for settlement",
            m.outbox.clone(),
        );
        registry.register(
            "settlement_lag_seconds",
            "Settlement lag: age of the oldest run in the outbox, waiting for its round (0 when none)",
            m.outbox_age.clone(),
        );
        registry.register(
            "mempool_records",
            "Records in this node's validator mempool",
            m.mempool.clone(),
        );
        registry.register(
            "consensus_height",
            "Height of the last block this node's chain copy committed",
            m.height.clone(),
        );
        registry.register(
            "review_cases",
            "Review cases by state (open, cleared, rejected)",
            m.cases.clone(),
        );
        Metrics { registry, ..m }
    }

    /// A run answered on `route` in `mode`.
    pub fn run(&self, route: &str, mode: &str) {
        self.runs
            .get_or_create(&vec![
                ("route", route.to_owned()),
                ("mode", mode.to_owned()),
            ])
            .inc();
    }

    /// Tokens an LLM call served.
    pub fn tokens(&self, prompt: u64, completion: u64) {
        self.tokens
            .get_or_create(&vec![("kind", "prompt".to_owned())])
            .inc_by(prompt);
        self.tokens
            .get_or_create(&vec![("kind", "completion".to_owned())])
            .inc_by(completion);
    }

    /// A heartbeat the enclave registrar sent (`ok`) or could not (`failed`).
    pub fn enclave_heartbeat(&self, outcome: &'static str) {
        self.enclave_heartbeats
            .get_or_create(&vec![("outcome", outcome.to_owned())])
            .inc();
    }

    pub(crate) fn refused(&self, why: &'static str) {
        self.refused
            .get_or_create(&vec![("reason", why.to_owned())])
            .inc();
    }
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(Metrics::new)
}
