//! The settings of one service each: `[relay]`, `[projector]` and `[lifecycle]` in the file
//! (`APPREG_RELAY__*`, `APPREG_PROJECTOR__*`, `APPREG_LIFECYCLE__*` in the environment). The
//! DCR saga's are [`crate::DcrSettings`] (`[dcr]`); the api's are [`crate::ApiSettings`] (`[api]`).

use serde::{Deserialize, Serialize};

/// `appreg relay`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelaySettings {
    /// Events published before their acks are awaited (also the read batch size).
    pub max_in_flight: usize,
    /// Longest wait for a JetStream API answer or a publish ack, in milliseconds.
    pub ack_timeout_ms: u64,
}

impl Default for RelaySettings {
    fn default() -> Self {
        RelaySettings {
            max_in_flight: 256,
            ack_timeout_ms: 5000,
        }
    }
}

/// `appreg projector`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProjectorSettings {
    /// The durable JetStream consumer (instances sharing it share the work). The former
    /// top-level `projector_consumer` still works and wins when set.
    pub consumer: String,
    /// Most events applied in one transaction.
    pub batch: usize,
    /// JetStream redelivers a message not acknowledged within this time, in milliseconds.
    pub ack_wait_ms: u64,
    /// No message for this long (milliseconds) while the event log moved on: the projector
    /// folds the log itself (checked every 5 s).
    pub catch_up_after_ms: u64,
}

impl Default for ProjectorSettings {
    fn default() -> Self {
        ProjectorSettings {
            consumer: "appreg-projector".into(),
            batch: 500,
            ack_wait_ms: 30_000,
            catch_up_after_ms: 10_000,
        }
    }
}

/// `appreg lifecycle`, the archive/restore process manager.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LifecycleSettings {
    /// Pause after each step of an archive or a restore, in milliseconds (0: none). The former
    /// top-level `lifecycle_step_pause_ms` still works and wins when set.
    pub step_pause_ms: u64,
}

impl crate::Config {
    /// The projector's settings, the former `projector_consumer` applied.
    pub fn projector_settings(&self) -> ProjectorSettings {
        ProjectorSettings {
            consumer: self
                .projector_consumer
                .clone()
                .unwrap_or_else(|| self.projector.consumer.clone()),
            ..self.projector.clone()
        }
    }

    /// The process manager's settings, the former `lifecycle_step_pause_ms` applied.
    pub fn lifecycle_settings(&self) -> LifecycleSettings {
        LifecycleSettings {
            step_pause_ms: self
                .lifecycle_step_pause_ms
                .unwrap_or(self.lifecycle.step_pause_ms),
        }
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closure signature
mod tests {
    use crate::{Config, DcrSettings};
    use std::path::Path;

    #[test]
    fn service_sections_from_the_file_and_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "appreg.toml",
                "[relay]\nmax_in_flight = 64\n[projector]\nconsumer = \"p1\"\nbatch = 50\n\
                 [lifecycle]\nstep_pause_ms = 7\n[dcr]\nattempts = 3\nfirst_delay_ms = 10\n",
            )?;
            jail.set_env("APPREG_RELAY__ACK_TIMEOUT_MS", "900");
            jail.set_env("APPREG_PROJECTOR__ACK_WAIT_MS", "1200");
            jail.set_env("APPREG_DCR__MAX_DELAY_MS", "40");
            let c = Config::load(Some(Path::new("appreg.toml"))).map_err(|e| e.to_string())?;
            assert_eq!((c.relay.max_in_flight, c.relay.ack_timeout_ms), (64, 900));
            let p = c.projector_settings();
            assert_eq!(
                (p.consumer.as_str(), p.batch, p.ack_wait_ms),
                ("p1", 50, 1200)
            );
            assert_eq!(c.lifecycle_settings().step_pause_ms, 7);
            assert_eq!(
                c.dcr,
                DcrSettings {
                    attempts: 3,
                    first_delay_ms: 10,
                    max_delay_ms: 40,
                    ..DcrSettings::default()
                }
            );
            // The former flat keys still work, and win.
            jail.set_env("APPREG_PROJECTOR_CONSUMER", "old");
            jail.set_env("APPREG_LIFECYCLE_STEP_PAUSE_MS", "250");
            let c = Config::load(Some(Path::new("appreg.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(c.projector_settings().consumer, "old");
            assert_eq!(c.projector_settings().batch, 50);
            assert_eq!(c.lifecycle_settings().step_pause_ms, 250);
            // A misspelt key of a section is refused, not ignored.
            jail.set_env("APPREG_RELAY__MAX_INFLIGHT", "3");
            let refused = Config::load(None).unwrap_err().to_string();
            assert!(refused.contains("max_inflight"), "{refused}");
            Ok(())
        });
    }

    #[test]
    fn defaults_are_the_services_former_constants() {
        let c = Config::defaults();
        assert_eq!(c.relay.max_in_flight, 256);
        assert_eq!(c.relay.ack_timeout_ms, 5000);
        let p = c.projector_settings();
        assert_eq!(
            (p.consumer.as_str(), p.batch, p.ack_wait_ms),
            ("appreg-projector", 500, 30_000)
        );
        assert_eq!(c.lifecycle_settings().step_pause_ms, 0);
        assert_eq!(
            (c.dcr.attempts, c.dcr.first_delay_ms, c.dcr.max_delay_ms),
            (5, 2000, 60_000)
        );
    }
}
