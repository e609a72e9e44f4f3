//! Prometheus metrics of the HTTP side, plus the ingest metrics, in one registry served
//! at `/metrics`.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use examflow_ingest::IngestMetrics;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

use crate::server::AppState;

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub latency: HistogramVec,
    pub submissions: IntCounterVec,
    pub ingest: IngestMetrics,
    /// The allocator's view of the heap (see [`crate::memory::AllocatorStats`]).
    allocated_bytes: IntGauge,
    resident_bytes: IntGauge,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "examflow_http_requests_total",
                "HTTP requests by route and status.",
            ),
            &["method", "route", "status"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "examflow_http_request_duration_seconds",
                "HTTP request latency.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            &["method", "route"],
        )
        .expect("valid metric");
        let submissions = IntCounterVec::new(
            Opts::new(
                "examflow_submissions_total",
                "Stored exam submissions by exam and result.",
            ),
            &["exam", "result"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(requests.clone()))
            .expect("register");
        registry
            .register(Box::new(latency.clone()))
            .expect("register");
        registry
            .register(Box::new(submissions.clone()))
            .expect("register");
        let allocated_bytes = IntGauge::new(
            "examflow_heap_allocated_bytes",
            "Bytes the server has allocated and not freed (jemalloc).",
        )
        .expect("valid metric");
        let resident_bytes = IntGauge::new(
            "examflow_heap_resident_bytes",
            "Bytes of physical memory the allocator keeps mapped, freed pages not yet \
             returned included (jemalloc).",
        )
        .expect("valid metric");
        registry
            .register(Box::new(allocated_bytes.clone()))
            .expect("register");
        registry
            .register(Box::new(resident_bytes.clone()))
            .expect("register");
        let ingest = IngestMetrics::new(&registry);
        Metrics {
            allocated_bytes,
            resident_bytes,
            registry,
            requests,
            latency,
            submissions,
            ingest,
        }
    }

    pub fn render(&self) -> String {
        if let Some(stats) = crate::memory::allocator_stats() {
            self.allocated_bytes.set(stats.allocated as i64);
            self.resident_bytes.set(stats.resident as i64);
        }
        let mut buffer = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8(buffer).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Counts and times every request by its route pattern (not the raw path, to keep the
/// label set small).
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    state
        .metrics
        .requests
        .with_label_values(&[method.as_str(), route.as_str(), status.as_str()])
        .inc();
    state
        .metrics
        .latency
        .with_label_values(&[method.as_str(), route.as_str()])
        .observe(started.elapsed().as_secs_f64());
    response
}
