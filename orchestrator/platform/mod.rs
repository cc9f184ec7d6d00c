//! The platforms Switch and Deploy act on: Render's REST API, shell commands, and an
//! env file plus restart command.

pub mod command;
pub mod env_file;
pub mod render;
pub mod retry;

use crate::playbook::PlatformConfig;
use crate::ports::Platform;
use std::sync::Arc;

/// The platform a playbook configures.
pub fn platform_for(cfg: &PlatformConfig) -> Arc<dyn Platform> {
    match cfg {
        PlatformConfig::Render(c) => Arc::new(render::RenderPlatform::new(c)),
        PlatformConfig::Command(c) => Arc::new(command::CommandPlatform::new(c)),
        PlatformConfig::EnvFile(c) => Arc::new(env_file::EnvFilePlatform::new(c)),
    }
}
