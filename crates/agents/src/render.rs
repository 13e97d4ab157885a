//! Turning an agent definition, a prompt and a run's paths into the exact argv, stdin and prompt
//! file of one invocation. Pure: no IO.

use std::path::{Path, PathBuf};

use model::PromptVia;

use crate::def::AgentDef;

/// The rendered invocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invocation {
    pub argv: Vec<String>,
    pub prompt_via: PromptVia,
    /// Where the prompt must be written before start (`prompt_via = file`).
    pub prompt_file: Option<PathBuf>,
}

/// Why a definition cannot be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("agent `{agent}` needs a prompt")]
    MissingPrompt { agent: String },
    #[error("the `command` agent needs a program: agentctl run -- CMD ARGS...")]
    MissingCommand,
    #[error("agent `{agent}` has an empty command")]
    EmptyCommand { agent: String },
}

/// Renders `def` for one run. `extra_args` (what followed `--` on the command line) are the
/// program for the `command` agent and extra arguments appended for any other agent.
pub fn render(
    name: &str,
    def: &AgentDef,
    prompt: Option<&str>,
    extra_args: &[String],
    prompt_file: &Path,
    workdir: &Path,
) -> Result<Invocation, RenderError> {
    if name == crate::presets::COMMAND {
        if extra_args.is_empty() {
            return Err(RenderError::MissingCommand);
        }
        return Ok(Invocation {
            argv: extra_args.to_vec(),
            prompt_via: PromptVia::Arg,
            prompt_file: None,
        });
    }
    if def.command.is_empty() {
        return Err(RenderError::EmptyCommand { agent: name.to_owned() });
    }
    let mentions = |needle: &str| def.command.iter().any(|a| a.contains(needle));
    let needs_prompt = mentions("{prompt}") || mentions("{prompt_file}") || def.prompt_via != PromptVia::Arg;
    if needs_prompt && prompt.is_none() {
        return Err(RenderError::MissingPrompt { agent: name.to_owned() });
    }
    let prompt_text = prompt.unwrap_or("");
    let file = prompt_file.to_string_lossy();
    let dir = workdir.to_string_lossy();
    let mut argv: Vec<String> = def
        .command
        .iter()
        .map(|a| {
            // Substitute {prompt} last so a prompt containing "{workdir}" stays literal.
            a.replace("{workdir}", &dir)
                .replace("{prompt_file}", &file)
                .replace("{prompt}", prompt_text)
        })
        .collect();
    match def.prompt_via {
        // A template that names {prompt_file} delivers the prompt that way already.
        PromptVia::Arg if !mentions("{prompt}") && !mentions("{prompt_file}") => argv.extend(prompt.map(str::to_owned)),
        PromptVia::File if !mentions("{prompt_file}") => argv.push(file.into_owned()),
        _ => {}
    }
    // Extra arguments are options for the agent: before an end-of-options `--`, if any.
    // (Found in the template, so a prompt that is itself `--` is not mistaken for it.)
    let at = def.command.iter().position(|a| a == "--").unwrap_or(argv.len());
    argv.splice(at..at, extra_args.iter().cloned());
    let uses_file = def.prompt_via == PromptVia::File || mentions("{prompt_file}");
    Ok(Invocation {
        argv,
        prompt_via: def.prompt_via,
        prompt_file: uses_file.then(|| prompt_file.to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::presets::presets;

    fn preset(name: &str) -> AgentDef {
        presets().into_iter().find(|(n, _)| *n == name).expect("preset").1
    }

    #[test]
    fn claude_gets_prompt_as_argument() {
        let inv = render(
            "claude-code",
            &preset("claude-code"),
            Some("fix it"),
            &[],
            Path::new("/p"),
            Path::new("/w"),
        )
        .unwrap();
        assert_eq!(inv.argv[0..2], ["claude", "-p"]);
        assert_eq!(inv.argv[inv.argv.len() - 2..], ["--", "fix it"]);
        assert_eq!(inv.prompt_file, None);
    }

    #[test]
    fn codex_reads_stdin_and_aider_a_file() {
        let codex = render(
            "codex",
            &preset("codex"),
            Some("t"),
            &[],
            Path::new("/p"),
            Path::new("/w"),
        )
        .unwrap();
        assert_eq!(codex.prompt_via, PromptVia::Stdin);
        assert_eq!(codex.argv.last().map(String::as_str), Some("-"));
        let aider = render(
            "aider",
            &preset("aider"),
            Some("t"),
            &[],
            Path::new("/p/prompt.md"),
            Path::new("/w"),
        )
        .unwrap();
        assert_eq!(aider.argv[1..3], ["--message-file", "/p/prompt.md"]);
        assert_eq!(aider.prompt_file.as_deref(), Some(Path::new("/p/prompt.md")));
    }

    #[test]
    fn prompt_is_required_and_not_reinterpreted() {
        let def = preset("gemini");
        assert!(matches!(
            render("gemini", &def, None, &[], Path::new("/p"), Path::new("/w")),
            Err(RenderError::MissingPrompt { .. })
        ));
        let inv = render(
            "gemini",
            &def,
            Some("use {workdir}"),
            &[],
            Path::new("/p"),
            Path::new("/w"),
        )
        .unwrap();
        assert_eq!(inv.argv[1], "--prompt=use {workdir}");
    }

    #[test]
    fn command_agent_runs_args_verbatim_and_extra_args_append() {
        let args = vec!["sh".to_owned(), "-c".to_owned(), "echo {prompt}".to_owned()];
        let inv = render(
            "command",
            &preset("command"),
            None,
            &args,
            Path::new("/p"),
            Path::new("/w"),
        )
        .unwrap();
        assert_eq!(inv.argv, args);
        assert_eq!(
            render(
                "command",
                &preset("command"),
                None,
                &[],
                Path::new("/p"),
                Path::new("/w")
            ),
            Err(RenderError::MissingCommand)
        );
        let extra = vec!["--model".to_owned(), "opus".to_owned()];
        let inv = render(
            "claude-code",
            &preset("claude-code"),
            Some("x"),
            &extra,
            Path::new("/p"),
            Path::new("/w"),
        )
        .unwrap();
        // Options go before the end-of-options marker; the prompt stays last.
        assert_eq!(&inv.argv[inv.argv.len() - 4..], &["--model", "opus", "--", "x"]);
        let inv = render(
            "opencode",
            &preset("opencode"),
            Some("-rf /"),
            &extra,
            Path::new("/p"),
            Path::new("/w"),
        )
        .unwrap();
        assert_eq!(&inv.argv[inv.argv.len() - 4..], &["--model", "opus", "--", "-rf /"]);
    }
}
