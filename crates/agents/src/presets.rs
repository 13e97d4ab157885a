//! Built-in agent presets, from each tool's documented non-interactive mode (see
//! `../shared/AGENT-CLIS.md` in the project docs for sources). Runs are isolated in their own
//! worktree, so presets auto-approve edits and commands inside it. A prompt given as an
//! argument always follows `--` or an `=`, so a prompt that starts with `-` is never read as an
//! option.

use std::collections::BTreeMap;

use model::PromptVia;

use crate::def::AgentDef;

/// The name of the agent that runs the program given after `--`.
pub const COMMAND: &str = "command";

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn env(items: &[(&str, &str)]) -> BTreeMap<String, String> {
    items.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

/// Every preset, by name.
pub fn presets() -> Vec<(&'static str, AgentDef)> {
    vec![
        (
            "claude-code",
            AgentDef {
                command: strings(&[
                    "claude",
                    "-p",
                    "--output-format",
                    "stream-json",
                    "--verbose",
                    "--permission-mode",
                    "bypassPermissions",
                    "--",
                    "{prompt}",
                ]),
                prompt_via: PromptVia::Arg,
                env: BTreeMap::new(),
                secret_env: strings(&[
                    "ANTHROPIC_API_KEY",
                    "CLAUDE_CODE_OAUTH_TOKEN",
                    "ANTHROPIC_AUTH_TOKEN",
                    "ANTHROPIC_BASE_URL",
                ]),
                tags: strings(&["code", "edit", "refactor", "debug", "test", "review", "general"]),
                description: "Anthropic Claude Code in print mode (claude -p), streaming JSON events".to_owned(),
                tty: false,
                version_args: strings(&["--version"]),
                install_hint: "npm install -g @anthropic-ai/claude-code".to_owned(),
                output: "claude-stream-json".to_owned(),
                domains: strings(&[
                    "api.anthropic.com",
                    "claude.ai",
                    "platform.claude.com",
                    "console.anthropic.com",
                ]),
                network: None,
                policy: None,
            },
        ),
        (
            "codex",
            AgentDef {
                command: strings(&["codex", "exec", "--json", "--full-auto", "-"]),
                prompt_via: PromptVia::Stdin,
                env: env(&[("NO_COLOR", "1")]),
                secret_env: strings(&["CODEX_API_KEY", "OPENAI_API_KEY", "OPENAI_BASE_URL"]),
                tags: strings(&["code", "edit", "refactor", "test", "general"]),
                description: "OpenAI Codex CLI (codex exec), JSONL events, prompt on stdin".to_owned(),
                tty: false,
                version_args: strings(&["--version"]),
                install_hint: "npm install -g @openai/codex".to_owned(),
                output: "codex-json".to_owned(),
                domains: strings(&["api.openai.com", "chatgpt.com", "auth.openai.com"]),
                network: None,
                policy: None,
            },
        ),
        (
            "gemini",
            AgentDef {
                command: strings(&[
                    "gemini",
                    "--prompt={prompt}",
                    "--output-format",
                    "stream-json",
                    "--approval-mode=yolo",
                ]),
                prompt_via: PromptVia::Arg,
                env: env(&[("GEMINI_CLI_TRUST_WORKSPACE", "true")]),
                secret_env: strings(&[
                    "GEMINI_API_KEY",
                    "GOOGLE_API_KEY",
                    "GOOGLE_APPLICATION_CREDENTIALS",
                    "GOOGLE_CLOUD_PROJECT",
                    "GOOGLE_CLOUD_LOCATION",
                    "GOOGLE_GENAI_USE_VERTEXAI",
                ]),
                tags: strings(&["code", "edit", "docs", "research", "general"]),
                description: "Google Gemini CLI in headless mode (gemini -p), streaming JSON events".to_owned(),
                tty: false,
                version_args: strings(&["--version"]),
                install_hint: "npm install -g @google/gemini-cli".to_owned(),
                output: "gemini-stream-json".to_owned(),
                domains: strings(&[
                    "generativelanguage.googleapis.com",
                    "cloudcode-pa.googleapis.com",
                    "oauth2.googleapis.com",
                ]),
                network: None,
                policy: None,
            },
        ),
        (
            "aider",
            AgentDef {
                command: strings(&[
                    "aider",
                    "--message-file",
                    "{prompt_file}",
                    "--yes-always",
                    "--no-pretty",
                    "--no-stream",
                    "--no-fancy-input",
                    "--no-show-model-warnings",
                    "--no-check-update",
                    "--analytics-disable",
                ]),
                prompt_via: PromptVia::File,
                env: env(&[("COLUMNS", "1000")]),
                secret_env: strings(&[
                    "OPENAI_API_KEY",
                    "ANTHROPIC_API_KEY",
                    "GEMINI_API_KEY",
                    "OPENROUTER_API_KEY",
                ]),
                tags: strings(&["code", "edit", "refactor", "pair"]),
                description: "Aider with one message from a file, auto-confirming; commits on the run's branch"
                    .to_owned(),
                tty: false,
                version_args: strings(&["--version"]),
                install_hint: "python3 -m pip install aider-chat".to_owned(),
                output: "text".to_owned(),
                domains: strings(&[
                    "api.openai.com",
                    "api.anthropic.com",
                    "generativelanguage.googleapis.com",
                    "openrouter.ai",
                ]),
                network: None,
                policy: None,
            },
        ),
        (
            "opencode",
            AgentDef {
                command: strings(&["opencode", "run", "--format", "json", "--", "{prompt}"]),
                prompt_via: PromptVia::Arg,
                env: BTreeMap::new(),
                secret_env: strings(&["ANTHROPIC_API_KEY", "OPENAI_API_KEY", "OPENCODE_SERVER_PASSWORD"]),
                tags: strings(&["code", "edit", "general"]),
                description: "OpenCode (opencode run), JSON events".to_owned(),
                tty: false,
                version_args: strings(&["--version"]),
                install_hint: "npm install -g opencode-ai".to_owned(),
                output: "opencode-json".to_owned(),
                domains: strings(&["api.anthropic.com", "api.openai.com", "models.dev"]),
                network: None,
                policy: None,
            },
        ),
        (
            COMMAND,
            AgentDef {
                command: Vec::new(),
                prompt_via: PromptVia::Arg,
                env: BTreeMap::new(),
                secret_env: Vec::new(),
                tags: strings(&["shell", "script"]),
                description: "Any program: agentctl run -- CMD ARGS...".to_owned(),
                tty: false,
                version_args: Vec::new(),
                install_hint: String::new(),
                output: "text".to_owned(),
                domains: Vec::new(),
                network: None,
                policy: None,
            },
        ),
    ]
}
