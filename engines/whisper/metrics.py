"""The engine's Prometheus metrics (one registry per app), served at GET /metrics.

    orchestra_whisper_requests_total{endpoint,status}     requests answered, by HTTP status
    orchestra_whisper_audio_seconds_total{endpoint}       seconds of audio transcribed
    orchestra_whisper_processing_seconds{endpoint}        decode + transcription (histogram, 200s)
    orchestra_whisper_queue_seconds{endpoint}             wait for a transcription slot (histogram)
    orchestra_whisper_model_load_seconds                  time the model took to load
    vllm:num_requests_running{model_name}                 transcriptions in progress
    vllm:num_requests_waiting{model_name}                 requests waiting for a slot

The two queue gauges keep vLLM's names on purpose: the gateway's load-aware balancing and its
batch pacing read exactly those (gateway/upstream/health.py, gateway/batch/concurrency.py).
`endpoint` is transcriptions | translations.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Seconds: a short clip on a CPU takes ~1 s, an hour of audio some minutes.
PROCESSING_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0)
QUEUE_BUCKETS = (0.001, 0.01, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class WhisperMetrics:
    def __init__(self, served_name: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "orchestra_whisper_requests",
            "Audio requests answered, by endpoint and HTTP status.",
            ["endpoint", "status"],
            registry=r,
        )
        self.audio_seconds = Counter(
            "orchestra_whisper_audio_seconds",
            "Seconds of audio transcribed or translated.",
            ["endpoint"],
            registry=r,
        )
        self.processing_seconds = Histogram(
            "orchestra_whisper_processing_seconds",
            "Decode and transcription time of a request answered 200 (from its slot's grant).",
            ["endpoint"],
            buckets=PROCESSING_BUCKETS,
            registry=r,
        )
        self.queue_seconds = Histogram(
            "orchestra_whisper_queue_seconds",
            "Time a request waited for a transcription slot.",
            ["endpoint"],
            buckets=QUEUE_BUCKETS,
            registry=r,
        )
        self.model_load_seconds = Gauge(
            "orchestra_whisper_model_load_seconds",
            "Seconds the model took to load at start.",
            registry=r,
        )
        running = Gauge(
            "vllm:num_requests_running",
            "Transcriptions in progress (vLLM's name: the gateway reads it).",
            ["model_name"],
            registry=r,
        )
        waiting = Gauge(
            "vllm:num_requests_waiting",
            "Requests waiting for a transcription slot (vLLM's name: the gateway reads it).",
            ["model_name"],
            registry=r,
        )
        self.running = running.labels(served_name)
        self.waiting = waiting.labels(served_name)

    def render(self) -> bytes:
        return generate_latest(self.registry)
