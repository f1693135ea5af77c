//! The daily schedule: when an issue is due, catch-up, per-zone delivery. Its job body only calls the pipeline.
