//! Prometheus metrics of the service, in one registry exposed at /metrics.

use std::time::Duration;

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::engine::Task;

const LATENCY_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];
const PASSAGE_BUCKETS: [f64; 7] = [0.0, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0];
const BATCH_BUCKETS: [f64; 8] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

/// Every metric the service exports.
pub struct Metrics {
    registry: Registry,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    request_duration: HistogramVec,
    queue_duration: HistogramVec,
    inference_duration: HistogramVec,
    batch_size: HistogramVec,
    queue_depth: IntGaugeVec,
    generated_tokens: IntCounterVec,
    model_load: GaugeVec,
    model_ready: IntGaugeVec,
    active_sequences: IntGaugeVec,
    abandoned_requests: IntCounterVec,
    recoveries: IntCounterVec,
    queue_capacity: IntGaugeVec,
    retrieval_duration: Histogram,
    passages_read: Histogram,
    store: IntGaugeVec,
}

fn histogram(name: &str, help: &str, buckets: &[f64], labels: &[&str]) -> HistogramVec {
    HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )
    .expect("metric definition is valid")
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new_custom(Some("nlp_serve".to_string()), None)
            .expect("registry prefix is valid");
        let metrics = Metrics {
            http_requests: IntCounterVec::new(
                Opts::new(
                    "http_requests_total",
                    "HTTP requests answered, by route, method and status.",
                ),
                &["route", "method", "status"],
            )
            .expect("metric definition is valid"),
            http_duration: histogram(
                "http_request_duration_seconds",
                "Time from receiving an HTTP request to its response, by route.",
                &LATENCY_BUCKETS,
                &["route"],
            ),
            request_duration: histogram(
                "request_duration_seconds",
                "Time a model request spent queued and in inference, by task.",
                &LATENCY_BUCKETS,
                &["task"],
            ),
            queue_duration: histogram(
                "queue_duration_seconds",
                "Time a request waited in its task's queue, by task.",
                &LATENCY_BUCKETS,
                &["task"],
            ),
            inference_duration: histogram(
                "inference_duration_seconds",
                "Time of one predict call over a batch (for completion: one request from admission to its last token; for translation: one request from leaving the queue to its last sentence), by task.",
                &LATENCY_BUCKETS,
                &["task"],
            ),
            batch_size: histogram(
                "batch_size",
                "Requests per predict call (for completion: sequences per decoding step; for translation: sentences per decoding step), by task.",
                &BATCH_BUCKETS,
                &["task"],
            ),
            queue_depth: IntGaugeVec::new(
                Opts::new("queue_depth", "Requests waiting in each task's queue."),
                &["task"],
            )
            .expect("metric definition is valid"),
            generated_tokens: IntCounterVec::new(
                Opts::new("generated_tokens_total", "Tokens generated, by task."),
                &["task"],
            )
            .expect("metric definition is valid"),
            model_load: GaugeVec::new(
                Opts::new(
                    "model_load_duration_seconds",
                    "Time taken to load each task's model.",
                ),
                &["task"],
            )
            .expect("metric definition is valid"),
            model_ready: IntGaugeVec::new(
                Opts::new(
                    "model_ready",
                    "1 when the task's model is loaded and serving.",
                ),
                &["task"],
            )
            .expect("metric definition is valid"),
            active_sequences: IntGaugeVec::new(
                Opts::new(
                    "active_sequences",
                    "Sequences in the running generation batch, by task.",
                ),
                &["task"],
            )
            .expect("metric definition is valid"),
            abandoned_requests: IntCounterVec::new(
                Opts::new(
                    "abandoned_requests_total",
                    "Requests whose work stopped early, by task and reason (disconnected, deadline).",
                ),
                &["task", "reason"],
            )
            .expect("metric definition is valid"),
            recoveries: IntCounterVec::new(
                Opts::new(
                    "worker_recoveries_total",
                    "Panics a task's worker caught: the requests involved got errors and the model state was rebuilt.",
                ),
                &["task"],
            )
            .expect("metric definition is valid"),
            queue_capacity: IntGaugeVec::new(
                Opts::new(
                    "queue_capacity",
                    "Requests each task's queue holds before answering 429.",
                ),
                &["task"],
            )
            .expect("metric definition is valid"),
            retrieval_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "retrieval_duration_seconds",
                    "Time to find the passages a question is answered from (BM25 over the document store, or over a long request context).",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
            )
            .expect("metric definition is valid"),
            passages_read: Histogram::with_opts(
                HistogramOpts::new(
                    "passages_read",
                    "Passages the reader read per question answered from documents.",
                )
                .buckets(PASSAGE_BUCKETS.to_vec()),
            )
            .expect("metric definition is valid"),
            store: IntGaugeVec::new(
                Opts::new(
                    "document_store",
                    "What the document store holds: documents, passages and characters.",
                ),
                &["measure"],
            )
            .expect("metric definition is valid"),
            registry,
        };
        metrics.register_all();
        for task in Task::ALL {
            // Export every per-task series from the start, at zero.
            metrics.queue_depth(task).set(0);
            metrics.model_ready.with_label_values(&[task.name()]).set(0);
            let _ = metrics.generated_tokens.with_label_values(&[task.name()]);
            let _ = metrics.recoveries.with_label_values(&[task.name()]);
            metrics.active_sequences(task).set(0);
            for reason in ["disconnected", "deadline"] {
                let _ = metrics.abandoned(task, reason);
            }
        }
        metrics
    }

    fn register_all(&self) {
        let collectors: [Box<dyn prometheus::core::Collector>; 17] = [
            Box::new(self.http_requests.clone()),
            Box::new(self.http_duration.clone()),
            Box::new(self.request_duration.clone()),
            Box::new(self.queue_duration.clone()),
            Box::new(self.inference_duration.clone()),
            Box::new(self.batch_size.clone()),
            Box::new(self.queue_depth.clone()),
            Box::new(self.generated_tokens.clone()),
            Box::new(self.model_load.clone()),
            Box::new(self.model_ready.clone()),
            Box::new(self.active_sequences.clone()),
            Box::new(self.abandoned_requests.clone()),
            Box::new(self.recoveries.clone()),
            Box::new(self.queue_capacity.clone()),
            Box::new(self.retrieval_duration.clone()),
            Box::new(self.passages_read.clone()),
            Box::new(self.store.clone()),
        ];
        for collector in collectors {
            self.registry
                .register(collector)
                .expect("metric names are unique");
        }
    }

    /// One retrieval: how long it took and how many passages were read.
    pub fn retrieval(&self, elapsed: Duration, passages: usize) {
        self.retrieval_duration.observe(elapsed.as_secs_f64());
        self.passages_read.observe(passages as f64);
    }

    /// The store's size after a change (`None`: it could not be read; the
    /// gauges keep their last values).
    pub fn store_size(&self, size: Option<crate::documents::StoreSize>) {
        if let Some(size) = size {
            for (measure, value) in [
                ("documents", size.documents),
                ("passages", size.passages),
                ("chars", size.chars),
            ] {
                self.store
                    .with_label_values(&[measure])
                    .set(i64::try_from(value).unwrap_or(i64::MAX));
            }
        }
    }

    pub fn http_request(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        self.http_requests
            .with_label_values(&[route, method, &status.to_string()])
            .inc();
        self.http_duration
            .with_label_values(&[route])
            .observe(elapsed.as_secs_f64());
    }

    pub fn request_duration(&self, task: Task) -> Histogram {
        self.request_duration.with_label_values(&[task.name()])
    }

    pub fn queue_duration(&self, task: Task) -> Histogram {
        self.queue_duration.with_label_values(&[task.name()])
    }

    pub fn inference_duration(&self, task: Task) -> Histogram {
        self.inference_duration.with_label_values(&[task.name()])
    }

    pub fn batch_size(&self, task: Task) -> Histogram {
        self.batch_size.with_label_values(&[task.name()])
    }

    pub fn queue_depth(&self, task: Task) -> IntGauge {
        self.queue_depth.with_label_values(&[task.name()])
    }

    pub fn generated_tokens(&self, task: Task) -> IntCounter {
        self.generated_tokens.with_label_values(&[task.name()])
    }

    pub fn active_sequences(&self, task: Task) -> IntGauge {
        self.active_sequences.with_label_values(&[task.name()])
    }

    /// Counts a request whose work stopped early: "disconnected" or "deadline".
    pub fn abandoned(&self, task: Task, reason: &str) -> IntCounter {
        self.abandoned_requests
            .with_label_values(&[task.name(), reason])
    }

    pub fn queue_capacity(&self, task: Task) -> IntGauge {
        self.queue_capacity.with_label_values(&[task.name()])
    }

    pub fn model_serving(&self, task: Task) {
        self.model_ready.with_label_values(&[task.name()]).set(1);
    }

    /// A worker caught a panic: the requests it held failed, its model state
    /// was rebuilt.
    pub fn recovered(&self, task: Task) {
        self.recoveries.with_label_values(&[task.name()]).inc();
    }

    pub fn model_unready(&self, task: Task) {
        self.model_ready.with_label_values(&[task.name()]).set(0);
    }

    pub fn model_loaded(&self, task: Task, elapsed: Duration) {
        self.model_load
            .with_label_values(&[task.name()])
            .set(elapsed.as_secs_f64());
        self.model_ready.with_label_values(&[task.name()]).set(1);
    }

    /// The exposition in Prometheus text format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(error) = encoder.encode(&self.registry.gather(), &mut buffer) {
            tracing::error!("could not encode metrics: {error}");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
