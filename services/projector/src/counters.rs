//! The projector's counters and gauge (README, "Metrics").

/// Handles on the projector's metrics, registered once per run.
pub(crate) struct Metrics {
    pub(crate) events: metrics::Counter,
    pub(crate) batches: metrics::Counter,
    pub(crate) errors: metrics::Counter,
    pub(crate) gaps: metrics::Counter,
    pub(crate) foreign: metrics::Counter,
    pub(crate) forged: metrics::Counter,
    pub(crate) catch_ups: metrics::Counter,
    pub(crate) parked: metrics::Gauge,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let p = appreg_readmodel::PROJECTION;
        Metrics {
            events: metrics::counter!("appreg_projector_events_total", "projection" => p),
            batches: metrics::counter!("appreg_projector_batches_total", "projection" => p),
            errors: metrics::counter!("appreg_projector_errors_total", "projection" => p),
            gaps: metrics::counter!("appreg_projector_gap_fills_total", "projection" => p),
            foreign: metrics::counter!("appreg_projector_foreign_messages_total", "projection" => p),
            forged: metrics::counter!("appreg_projector_forged_messages_total", "projection" => p),
            catch_ups: metrics::counter!("appreg_projector_catch_ups_total", "projection" => p),
            parked: metrics::gauge!("appreg_projection_parked_events", "projection" => p),
        }
    }
}
