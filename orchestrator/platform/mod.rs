//! The platforms Switch and Deploy act on: Render's REST API, shell commands, and an
//! env file plus restart command.

pub mod command;
pub mod env_file;
pub mod render;
