//! What a platform deploy restarts: the in-process stand-in service or the external
//! BullMQ process. Both take the same configuration, so the platform's deploys and
//! faults (failed deploys, idle workers) work the same for either.

use crate::node_service::NodeService;
use crate::service::{Service, ServiceConfig};

/// The service a platform hosts (cheap to clone).
#[derive(Clone)]
pub enum Host {
    /// `sandbox::service`: axum handlers and Rust workers inside this process.
    InProcess(Service),
    /// `bullmq-service/`: a Node process with real BullMQ and ioredis.
    Bullmq(NodeService),
}

impl Host {
    /// Replaces the running incarnation with one using `config`. Err when the new one
    /// never came up (only a Node process can fail so); the deploy then fails.
    pub async fn restart(&self, config: ServiceConfig) -> Result<(), String> {
        match self {
            Host::InProcess(s) => {
                s.restart(config).await;
                Ok(())
            }
            Host::Bullmq(n) => n.restart(config).await,
        }
    }

    /// Stops the service: workers and Redis connections (in-process), or the process.
    pub async fn shutdown(&self) {
        match self {
            Host::InProcess(s) => s.shutdown().await,
            Host::Bullmq(n) => n.shutdown().await,
        }
    }

    /// The configuration of the running incarnation (None after shutdown).
    pub fn config(&self) -> Option<ServiceConfig> {
        match self {
            Host::InProcess(s) => s.config(),
            Host::Bullmq(n) => n.config(),
        }
    }
}
