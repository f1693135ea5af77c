//! The HTTP side of the service: unsubscribe, sign-up, archive, health, metrics.
