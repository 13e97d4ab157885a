//! `agentctl demo`: stub until the demo lands.
use crate::cli::{DemoArgs, GlobalArgs};
use crate::exit::CliError;
pub fn demo(_g: &GlobalArgs, _args: &DemoArgs) -> Result<i32, CliError> {
    Ok(0)
}
