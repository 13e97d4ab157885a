//! `agentctl bench`: stub until the benchmarks land.
use crate::cli::{BenchArgs, GlobalArgs};
use crate::exit::CliError;
pub fn bench(_g: &GlobalArgs, _args: BenchArgs) -> Result<i32, CliError> {
    Ok(0)
}
