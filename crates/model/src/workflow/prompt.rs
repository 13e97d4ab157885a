//! Step prompt templates: `{{name}}` placeholders filled from a fixed set of variables. A
//! template naming an unknown variable is refused when the workflow is loaded, not when the
//! step runs.

use std::collections::BTreeMap;

/// The variables a prompt may use.
pub const VARIABLES: [&str; 8] = [
    "task",
    "messages",
    "cycle",
    "max_cycles",
    "remaining_hops",
    "step",
    "hop",
    "run_id",
];

/// The template of a step that sets no prompt: the task, then its messages (if any).
pub const DEFAULT: &str = "{{task}}{{messages_block}}";

/// Checks that every `{{…}}` in `template` names a known variable.
pub fn check(template: &str) -> Result<(), String> {
    for name in placeholders(template) {
        if !VARIABLES.contains(&name) {
            return Err(format!(
                "unknown prompt variable `{{{{{name}}}}}` (known: {})",
                VARIABLES.join(", ")
            ));
        }
    }
    Ok(())
}

fn placeholders(template: &str) -> impl Iterator<Item = &str> {
    template
        .split("{{")
        .skip(1)
        .filter_map(|rest| rest.split_once("}}").map(|(n, _)| n.trim()))
}

/// Fills `template` (or [`DEFAULT`]) with `vars`. Substituted values are not scanned again, so a
/// task that itself contains `{{cycle}}` stays as written.
pub fn render(template: Option<&str>, vars: &BTreeMap<&str, String>) -> String {
    let template = template.unwrap_or(DEFAULT);
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(at) = rest.find("{{") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        match after.split_once("}}") {
            // `{{a {{task}}`: the placeholder is the innermost one; what precedes it is text.
            Some((name, _)) if name.contains("{{") => {
                let inner = name.rfind("{{").unwrap_or(0);
                out.push_str("{{");
                out.push_str(&name[..inner]);
                rest = &after[inner..];
            }
            Some((name, tail)) => {
                let name = name.trim();
                match (name, vars.get(name)) {
                    ("messages_block", _) => {
                        if let Some(m) = vars.get("messages").filter(|m| !m.is_empty()) {
                            out.push_str("\n\nMessages:\n");
                            out.push_str(m);
                        }
                    }
                    (_, Some(v)) => out.push_str(v),
                    (_, None) => {
                        out.push_str("{{");
                        out.push_str(name);
                        out.push_str("}}");
                    }
                }
                rest = tail;
            }
            None => {
                out.push_str(&rest[at..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_variables_are_refused_and_known_ones_filled_once() {
        assert!(check("Task: {{task}} ({{ cycle }} of {{max_cycles}})").is_ok());
        let e = check("{{tsak}}").unwrap_err();
        assert!(e.contains("`{{tsak}}`"), "{e}");
        let vars = BTreeMap::from([("task", "fix {{cycle}}".to_owned()), ("cycle", "2".to_owned())]);
        assert_eq!(render(Some("T={{task}} c={{ cycle }}"), &vars), "T=fix {{cycle}} c=2");
        assert_eq!(render(Some("{{a {{cycle}} {{"), &vars), "{{a 2 {{");
    }

    #[test]
    fn the_default_prompt_is_the_task_then_any_messages() {
        let mut vars = BTreeMap::from([("task", "do it".to_owned()), ("messages", String::new())]);
        assert_eq!(render(None, &vars), "do it");
        vars.insert("messages", "- from review: fix the test".to_owned());
        assert_eq!(render(None, &vars), "do it\n\nMessages:\n- from review: fix the test");
    }
}
