//! The synonym table: groups of words and short phrases that name the same capability.
//!
//! Each group is a *concept* (`test`, `security`, …). Both agents' tags and descriptions and the
//! task are analysed with the same table, so an agent tagged `test` and a task that says
//! `coverage` meet on the concept `#test` even though they share no word. A concept match
//! counts less than a word match (see `router::CONCEPT_WEIGHT`), and a word that matches both
//! ways counts twice, so the exact word still wins.
//!
//! Entries are written naturally and stemmed when the table is built; phrases of up to three
//! words match consecutive words of the text, stopwords included (`look over`, `out of memory`,
//! `doesn't work`). A word may belong to several groups (`too long`: perf and refactor), and a
//! phrase may name another group than its words (`dependency injection` is refactoring).
//!
//! The vocabulary is generic software-engineering language, one group per common speciality:
//! what users ask for (verbs and nouns of the trade), the symptoms they report (`returns wrong`,
//! `since upgrading`, `takes forever`, `OOM`), and the tools, file types and services involved
//! (`pytest`, `Dockerfile`, `Terraform`, `pandas`). The first version was grown from the misses
//! of the tuning set (`router/eval.jsonl`); the second was broadened from general knowledge,
//! group by group, not from particular tasks. A registry whose tags fall outside it still works,
//! on word matches and on its agents' examples.

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::text;

/// The longest phrase, in words.
pub(crate) const MAX_PHRASE: usize = 3;

/// Concept name → words and phrases.
#[rustfmt::skip]
const CONCEPTS: &[(&str, &[&str])] = &[
    ("implement", &[
        "implement", "implementation", "feature", "functionality", "endpoint", "option", "flag", "subcommand",
        "command", "script", "tool", "utility", "add support", "support for", "glue", "prototype", "scaffold",
        "boilerplate", "cli", "convert", "converter", "new feature", "feature request", "webhook", "integrate", "sdk",
        "api client", "client library", "wrapper", "generator", "download", "upload", "sync", "notification",
        "notify", "bot", "plugin", "extension", "retry", "backoff", "allow users", "let users", "ability to",
        "new command", "automate", "command line", "argument", "crud", "rest api", "graphql", "grpc", "api route",
        "handler", "slack", "scraper", "scrape", "config file", "configurable", "env var", "environment variable",
        "yaml", "toml", "json", "rate limiter", "queue", "background job", "oauth flow", "integration with",
        "hook up", "wire up", "support reading", "support writing", "user profile",
        "let admins", "allow admins", "let people", "let customers", "be able to",
    ]),
    ("review", &[
        "review", "critique", "feedback", "pull request", "pr", "prs", "merge request", "look over", "look at",
        "second opinion", "pair of eyes", "sanity check", "nitpick", "lgtm", "approve", "red flag", "code quality",
        "convention", "coding standard", "style guide", "code style", "coding style", "best practice", "think of",
        "thoughts on", "diff", "code review", "go through", "go over", "read through", "look through", "sloppy",
        "comments on", "feedback on", "is this ok", "looks good", "look good", "good enough", "mergeable",
        "ready to merge", "merge", "patch", "changeset", "my changes", "my branch", "my code", "my pr", "my patch",
        "this patch", "this branch", "branch", "suggestion", "suggest improvements", "opinion", "nit", "idiomatic",
        "anti pattern", "antipattern", "code smell", "smell", "pr review", "sign off", "safe to ship", "ship",
        "anything off", "looks off", "pitfall", "gotcha", "design review", "approval", "reviewer", "point out",
        "issues with", "you think",
    ]),
    ("test", &[
        "test", "unit test", "spec", "coverage", "covered", "uncovered", "fixture", "mock", "stub", "fake", "assert",
        "assertion", "tdd", "flaky", "flakiness", "test suite", "test case", "e2e", "end to end", "property based",
        "snapshot test", "pytest", "jest", "junit", "mocha", "rspec", "quickcheck", "proptest", "edge case", "qa",
        "regression test", "cover", "integration test", "test coverage", "code coverage", "test harness",
        "test runner", "test plan", "golden file", "golden test", "snapshot", "fuzz", "fuzzing", "fuzzer",
        "mutation testing", "smoke test", "acceptance test", "contract test", "cypress", "playwright", "selenium",
        "vitest", "testing library", "unittest", "xunit", "nunit", "gtest", "googletest", "catch2", "hypothesis",
        "parametrize", "parameterize", "table driven", "test double", "spy", "monkeypatch", "testcontainers",
        "test data", "deterministic", "nondeterministic", "intermittently fails", "randomly fails", "fails randomly",
        "red green", "test file", "tests pass", "failing test", "broken test", "test failure", "corner case",
        "boundary", "happy path", "sad path", "verify behavior", "verify behaviour", "mocking", "faker",
        "factory bot", "doctest", "round trip", "roundtrip", "branch coverage",
    ]),
    ("docs", &[
        "doc", "docs", "documentation", "document", "readme", "comment", "docstring", "doc comment", "guide",
        "tutorial", "walkthrough", "how to", "getting started", "changelog", "release note", "explain", "explanation",
        "wiki", "manual", "markdown", "typo", "onboarding", "api reference", "reference", "rustdoc", "javadoc",
        "jsdoc", "sphinx", "mkdocs", "faq", "instruction", "man page", "write up", "broken link", "docs site",
        "contributing", "contributor", "architecture doc", "design doc", "adr", "diagram", "mermaid", "docusaurus",
        "godoc", "pydoc", "typedoc", "usage example", "code sample", "migration guide", "upgrade guide", "user guide",
        "handbook", "glossary", "cheatsheet", "cheat sheet", "describe", "description", "clarify", "wording",
        "grammar", "spelling", "proofread", "intro", "introduction", "overview", "section", "paragraph", "blog post",
        "announcement", "annotate", "api docs", "help text", "usage", "undocumented", "examples section",
        "install instruction", "installation", "setup instruction", "prose", "document how", "technical writing",
        "docs page", "knowledge base",
    ]),
    ("security", &[
        "security", "secure", "insecure", "vulnerability", "vulnerable", "cve", "advisory", "exploit", "attack",
        "attacker", "injection", "xss", "cross site", "csrf", "ssrf", "traversal", "rce", "auth", "authentication",
        "authorization", "authn", "authz", "login", "sign in", "permission", "privilege", "access control", "secret",
        "credential", "password", "api key", "token", "jwt", "oauth", "session", "encrypt", "encryption", "decrypt",
        "crypto", "cryptography", "salt", "tls", "ssl", "certificate", "sanitize", "harden", "owasp", "pentest",
        "threat", "dependabot", "audit", "sensitive", "pii", "malicious", "cors", "admin", "role", "rbac", "acl",
        "access", "unauthorized", "rate limit", "brute force", "cookie", "leak", "rotate", "command injection",
        "sql injection", "idor", "open redirect", "clickjacking", "deserialization attack", "xxe", "path traversal",
        "directory traversal", "privilege escalation", "escalation", "hardcoded", "hard coded", "plaintext",
        "plain text", "unencrypted", "bcrypt", "argon2", "scrypt", "md5", "sha1", "hmac", "2fa", "mfa", "two factor",
        "otp", "totp", "saml", "sso", "single sign on", "openid", "oidc", "csp", "content security policy", "hsts",
        "security header", "sanitise", "untrusted", "user input", "input validation", "tamper", "tampering", "spoof",
        "spoofing", "phishing", "ddos", "denial of service", "lockout", "session fixation", "hijack", "hijacking",
        "samesite", "httponly", "firewall", "waf", "vault", "kms", "gitleaks", "trufflehog", "snyk", "sast", "dast",
        "bandit", "semgrep", "codeql", "npm audit", "cargo audit", "supply chain", "sbom", "least privilege",
        "exposed", "exposure", "leaked", "compromise", "compromised", "backdoor", "malware", "sandbox", "sandboxing",
        "seccomp", "world readable", "privacy", "compliance", "gdpr", "personal data", "penetration test",
        "security test", "security review", "security audit", "cipher", "nonce", "replay attack", "timing attack",
        "signed url", "csrf token", "reset token", "password reset", "impersonate", "safe against", "abuse",
        "account takeover", "threat model", "permission model", "security model", "password hash", "password hashing",
        "hashed password", "signature verification", "verify signature",
        "hole", "security hole", "lock down", "lock that down", "publicly", "script tag", "exploitable",
    ]),
    ("frontend", &[
        "frontend", "front end", "ui", "ux", "user interface", "css", "html", "dom", "react", "vue", "svelte",
        "angular", "jsx", "tsx", "tailwind", "sass", "scss", "bootstrap", "component", "layout", "stylesheet",
        "responsive", "mobile", "tablet", "phone", "screen", "browser", "safari", "chrome", "firefox", "web page",
        "page", "button", "modal", "dialog", "navbar", "sidebar", "header", "footer", "dropdown", "menu", "tooltip",
        "form", "checkbox", "animation", "theme", "dark mode", "color", "colour", "font", "icon", "pixel", "viewport",
        "accessibility", "accessible", "a11y", "aria", "screen reader", "keyboard", "focus", "hover", "click",
        "design system", "figma", "widget", "render", "web app", "spa", "storybook", "spinner", "sticky", "scroll",
        "toast", "snackbar", "banner", "carousel", "slider", "tab", "accordion", "breadcrumb", "infinite scroll",
        "swipe", "swipeable", "gesture", "touch", "drag and drop", "drag", "popover", "popup", "overlay", "z index",
        "flexbox", "css grid", "margin", "padding", "align", "alignment", "misaligned", "centered", "text overflow",
        "ellipsis", "font size", "typography", "spacing", "border", "shadow", "rounded corner", "transition", "fade",
        "skeleton", "placeholder", "input field", "text field", "textbox", "radio button", "date picker",
        "datepicker", "autocomplete", "typeahead", "search box", "nextjs", "next js", "nuxt", "remix", "vite",
        "webpack", "redux", "zustand", "state management", "react hook", "usestate", "useeffect", "prop",
        "styled component", "css module", "material ui", "mui", "chakra", "shadcn", "rtl", "hydration", "client side",
        "pwa", "favicon", "svg", "canvas", "wcag", "contrast", "alt text", "tab order", "voiceover",
        "keyboard navigation", "dark theme", "light mode", "styling", "pixel perfect", "mockup", "wireframe",
        "ui component", "tap", "scrollbar", "flicker", "flickering", "layout shift", "web component", "frontend test",
        "landing page", "single page", "html email", "svelte kit", "tooltips", "link color", "light theme",
        "hamburger menu", "mobile view", "desktop view", "on mobile", "on ios", "on android", "in safari",
        "in firefox", "in chrome", "lightbox", "image gallery", "sortable", "profile page",
    ]),
    ("database", &[
        "database", "db", "sql", "query", "migration", "migrate", "schema", "table", "column", "row", "index",
        "foreign key", "primary key", "constraint", "postgres", "postgresql", "psql", "mysql", "mariadb", "sqlite",
        "mongodb", "mongo", "orm", "activerecord", "sqlalchemy", "prisma", "diesel", "sequelize", "transaction",
        "backfill", "stored procedure", "denormalize", "data model", "relational", "dynamodb", "cassandra", "join",
        "inner join", "left join", "group by", "select statement", "n+1", "upsert", "insert", "cascade", "on delete",
        "trigger", "materialized view", "partition", "partitioning", "sharding", "shard", "replica", "replication",
        "read replica", "vacuum", "isolation level", "acid", "normalize", "normalization", "erd",
        "entity relationship", "seed data", "nullable", "not null", "default value", "unique constraint",
        "check constraint", "composite key", "composite index", "btree", "explain analyze", "query plan",
        "execution plan", "slow query", "django orm", "hibernate", "jpa", "typeorm", "knex", "gorm", "ecto",
        "entity framework", "alembic", "flyway", "liquibase", "sql server", "mssql", "oracle", "cockroachdb",
        "supabase", "pg", "pg dump", "orm model", "record", "records", "rows", "tables", "schema change",
        "data migration", "sql query", "persist", "persistence", "key value", "timestamp column", "uuid",
        "auto increment", "collation", "full text search", "tsvector", "cte", "window function", "subquery",
        "aggregate query", "denormalized", "referential integrity", "orphaned rows", "duplicate rows", "dedupe rows",
        "connection string",
    ]),
    ("devops", &[
        "devops", "ci", "cd", "continuous integration", "continuous delivery", "pipeline", "github actions",
        "github action", "gitlab ci", "jenkins", "circleci", "deploy", "deployment", "rollout", "rollback",
        "release automation", "docker", "dockerfile", "container", "docker image", "container image", "compose",
        "kubernetes", "k8s", "helm", "helm chart", "manifest", "terraform", "ansible", "pulumi", "cloudformation",
        "infrastructure", "infra", "provision", "staging", "prod", "aws", "gcp", "azure", "s3", "ec2", "nginx",
        "load balancer", "dns", "monitoring", "alert", "alerting", "prometheus", "grafana", "datadog",
        "observability", "uptime", "cron", "systemd", "build pipeline", "build system", "error rate", "ci cd",
        "workflow file", "gitlab", "travis", "buildkite", "argo", "argocd", "flux", "spinnaker", "tekton", "podman",
        "image registry", "container registry", "ecr", "gcr", "ghcr", "kubectl", "pod", "ingress", "service mesh",
        "istio", "kustomize", "autoscaling", "autoscaler", "hpa", "replicas", "rolling update", "canary",
        "blue green", "zero downtime", "downtime", "on call", "pagerduty", "runbook", "sre", "slo", "sla",
        "log aggregation", "loki", "elk", "fluentd", "opentelemetry", "health check", "liveness", "readiness",
        "probe", "restart policy", "orchestrator", "ecs", "fargate", "lambda", "serverless", "cloud run", "heroku",
        "vercel", "netlify", "vm", "virtual machine", "vps", "bastion", "vpc", "subnet", "iam", "build cache",
        "artifact", "release pipeline", "semantic release", "publish", "cronjob", "caddy", "haproxy", "reverse proxy",
        "certbot", "cloudflare", "cdn", "backup", "disaster recovery", "pre commit", "git hook", "self hosted",
        "matrix build", "build step", "yaml pipeline", "cloud", "node pool", "secrets manager", "environment", "env",
        "ansible playbook", "playbook", "makefile", "image size", "multi stage", "base image", "registry",
        "deploy key", "ssh", "hosting", "tls certificate", "metrics", "cloudwatch", "sentry", "new relic",
        "status page", "to production", "deploy to production", "production environment", "production cluster",
        "production deploy", "self hosted runner", "ci runner", "every pull request", "each pull request",
        "every push", "every commit", "each commit", "on push", "on merge",
    ]),
    ("refactor", &[
        "refactor", "restructure", "reorganize", "reorganise", "cleanup", "clean up", "tidy", "rename", "extract",
        "split", "simplify", "dedupe", "deduplicate", "duplicate", "duplication", "dry", "dead code", "unused",
        "tech debt", "technical debt", "legacy", "modernize", "modernise", "messy", "spaghetti", "readable",
        "readability", "hard to read", "maintainable", "maintainability", "consolidate", "decouple", "abstraction",
        "dependency injection", "inline", "rewrite", "monolith", "god class", "untangle", "modularize", "replace",
        "magic number", "constant", "break up", "rearrange", "clean", "cleaner", "clean code", "tidy up", "split up",
        "split into", "break apart", "extract method", "extract function", "extract class", "move into", "renaming",
        "copy paste", "copy pasted", "generic", "trait", "polymorphism", "design pattern", "strategy pattern",
        "inheritance", "composition", "coupling", "tightly coupled", "loosely coupled", "cohesion",
        "separation of concern", "single responsibility", "solid principle", "long function", "long method", "giant",
        "huge", "massive", "bloated", "convoluted", "nested", "deeply nested", "callback hell", "callback", "promise",
        "async await", "without changing", "same behavior", "same behaviour", "no functional change",
        "behavior preserving", "behaviour preserving", "idiomatic", "type hint", "type annotation", "dumping ground",
        "unmanageable", "god object", "organize", "organise", "folder structure", "file structure",
        "directory structure", "module structure", "move file", "lines long", "too long", "too big", "too many",
        "smaller function", "smaller piece", "named constant", "hardcoded value", "reuse", "reusable", "shared code",
        "common code", "nearly identical", "redundant", "boilerplate", "verbose", "overcomplicated", "complicated",
        "complex", "complexity", "cyclomatic", "lint warning", "deprecated", "deprecation", "upgrade syntax",
        "python 2", "over engineered", "flatten", "helper function", "utility module", "encapsulate", "encapsulation",
        "interface", "facade", "adapter",
        "no behavior change", "no behaviour change", "identical output", "identical behavior",
        "identical behaviour", "bit for bit", "exact same", "behaves the same", "behave the same",
    ]),
    ("data", &[
        "data", "dataset", "data set", "data science", "analysis", "analyze", "analyse", "analytics", "statistic",
        "stats", "histogram", "distribution", "correlation", "plot", "chart", "visualize", "visualization", "pandas",
        "numpy", "polars", "dataframe", "notebook", "jupyter", "csv", "parquet", "etl", "spreadsheet", "excel", "ml",
        "machine learning", "train", "training", "fine tune", "finetune", "classifier", "classification", "predict",
        "prediction", "forecast", "inference", "embedding", "llm", "bert", "transformer", "neural", "neural network",
        "pytorch", "tensorflow", "keras", "sklearn", "scikit", "xgboost", "feature engineering", "accuracy",
        "precision", "recall", "f1", "validation set", "cross validation", "hyperparameter", "clustering", "resample",
        "average", "test set", "training set", "missing value", "data analysis", "eda", "exploratory", "insight",
        "trend", "cohort", "retention", "churn", "segment", "segmentation", "kmeans", "k means", "regression model",
        "linear regression", "logistic regression", "random forest", "gradient boosting", "lightgbm", "catboost",
        "model training", "ml model", "deep learning", "cnn", "rnn", "lstm", "gpt", "huggingface", "hugging face",
        "labelled", "labeled", "sample", "sampling", "outlier", "anomaly", "anomaly detection", "time series",
        "seasonality", "moving average", "regression analysis", "hypothesis test", "a/b test", "ab test",
        "significance", "p value", "confidence interval", "mean", "median", "variance", "standard deviation",
        "aggregate", "aggregation", "groupby", "pivot", "pivot table", "matplotlib", "seaborn", "plotly", "ggplot",
        "tableau", "power bi", "metabase", "scatter plot", "bar chart", "line chart", "heatmap", "rstudio", "colab",
        "kaggle", "spark", "pyspark", "dask", "airflow", "dbt", "data warehouse", "data lake", "bigquery",
        "snowflake", "redshift", "data cleaning", "impute", "imputation", "one hot", "feature selection",
        "overfitting", "overfit", "underfitting", "epoch", "learning rate", "gradient", "gpu", "cuda",
        "model evaluation", "confusion matrix", "roc", "auc", "rmse", "recommender", "recommendation model",
        "ranking model", "nlp", "sentiment", "text classification", "computer vision", "image classification",
        "object detection", "ocr", "survey", "sales", "revenue report", "kpi", "model", "benchmark dataset",
        "data pipeline", "ml pipeline", "training pipeline", "etl pipeline", "labelling", "train test split",
        "weights", "evaluate the model", "r squared", "correlate", "percentage", "per month", "daily active",
        "breakdown",
    ]),
    ("debug", &[
        "debug", "bug", "buggy", "crash", "segfault", "segmentation fault", "panic", "exception", "error",
        "traceback", "stack trace", "backtrace", "core dump", "broken", "broke", "fail", "failure", "wrong",
        "incorrect", "unexpected", "regression", "root cause", "reproduce", "repro", "bisect", "doesn't work",
        "not working", "hang", "freeze", "deadlock", "race condition", "null pointer", "undefined", "nil",
        "off by one", "investigate", "diagnose", "figure out", "why", "glitch", "misbehave", "fault", "corrupt",
        "corruption", "bug report", "instead of", "expected", "invalid", "unable", "cannot", "timeout", "time out",
        "off by", "out of bounds", "throw", "thrown", "raise", "keyerror", "typeerror", "valueerror",
        "attributeerror", "nameerror", "indexerror", "nullpointerexception", "npe", "cannot read property", "nan",
        "stack overflow", "infinite loop", "infinite recursion", "stuck", "not responding", "unresponsive",
        "stopped working", "no longer", "used to work", "worked before", "since upgrading", "after upgrading",
        "after the upgrade", "after updating", "since the update", "started failing", "suddenly", "intermittent",
        "intermittently", "sometimes", "occasionally", "heisenbug", "data race", "memory corruption",
        "use after free", "double free", "sigsegv", "sigabrt", "abort", "core dumped", "unhandled", "uncaught", "500",
        "500 error", "internal server error", "http 500", "status code", "wrong result", "wrong output",
        "wrong value", "incorrect result", "rounding", "rounding error", "floating point", "timezone", "time zone",
        "utc", "daylight saving", "encoding issue", "unicode", "mojibake", "garbled", "twice", "double", "missing",
        "disappear", "vanish", "not saved", "blank", "white screen", "nothing happens", "ignored", "never called",
        "fires twice", "minimal repro", "debugger", "gdb", "lldb", "pdb", "breakpoint", "step through",
        "error message", "troubleshoot", "troubleshooting", "what's wrong", "what is wrong", "how come", "weird",
        "strange", "mysterious", "connection reset", "connection refused", "econnrefused", "timed out",
        "inconsistent", "mismatch", "doesn't match", "breaks", "breaking", "null", "none", "incorrectly", "erroneous",
        "misbehaving", "failing", "fails", "crashes", "crashing", "exit code", "non zero", "errno",
        "permission denied", "not found", "404", "supposed to", "should be", "should not", "shouldn't", "one day",
        "early", "wrongly", "mixed up", "lost", "loses", "duplicate entries", "created twice", "runs twice",
        "charged twice", "empty response", "empty list", "empty result", "always returns", "never returns",
        "returns null", "returns none", "returns empty", "log says", "in the logs", "errors in", "unexpectedly",
        "random", "randomly", "sporadic", "sporadically", "flakes", "can't", "won't", "isn't", "doesn't", "didn't",
        "in production", "on production", "from production", "in prod",
        "culprit", "track down", "track it down", "silently", "what changed",
    ]),
    ("perf", &[
        "performance", "perf", "performant", "fast", "faster", "fastest", "speed", "speed up", "speedup", "slow",
        "slower", "slowness", "sluggish", "latency", "throughput", "optimize", "optimization", "efficient",
        "efficiency", "inefficient", "profile", "profiling", "flamegraph", "flame graph", "benchmark", "bench",
        "memory", "ram", "oom", "out of memory", "memory usage", "memory leak", "allocation", "allocate", "hot path",
        "hot loop", "hotspot", "cpu", "p50", "p95", "p99", "tail latency", "cache", "caching", "memoize",
        "scalability", "load time", "startup time", "takes too long", "too long", "bottleneck", "quadratic",
        "parallelize", "vectorize", "simd", "garbage collection", "slowly", "slowdown", "laggy", "lag", "jank",
        "janky", "stutter", "choppy", "smooth", "takes forever", "takes ages", "takes minutes", "takes seconds",
        "takes hours", "too slow", "seconds to load", "load faster", "quicker", "performance tuning", "qps", "rps",
        "requests per second", "response time", "p90", "p999", "cpu usage", "high cpu", "cpu bound", "io bound",
        "memory footprint", "footprint", "heap", "heap size", "gc pause", "gc", "garbage collector", "allocator",
        "zero copy", "big o", "n squared", "linear time", "algorithmic", "perf record", "pprof", "valgrind", "massif",
        "heaptrack", "callgrind", "cachegrind", "criterion", "hyperfine", "jmh", "microbenchmark", "load test",
        "load testing", "stress test", "k6", "locust", "jmeter", "gatling", "memoization", "lazy loading",
        "lazy load", "prefetch", "batching", "batch", "bulk insert", "connection pool", "pooling", "parallel",
        "parallelism", "multithreading", "thread pool", "non blocking", "cold start", "bundle size", "boot time",
        "wasteful", "expensive", "costly", "overhead", "resource usage", "under load", "high load", "heavy load",
        "fps", "frame rate", "ttfb", "lighthouse", "web vitals", "gb", "mb", "at idle", "idle", "large input",
        "large file", "big file", "huge file", "millions", "million rows", "thousands", "10x", "2x", "scale",
        "scales", "per request", "tight loop", "speed it up", "make it faster", "runs faster", "run faster",
        "bring down",
    ]),
];

/// The table, keyed by stemmed words joined with single spaces.
#[derive(Debug)]
pub(crate) struct Lexicon {
    entries: HashMap<String, Vec<&'static str>>,
}

impl Lexicon {
    /// The built table (built once per process).
    pub(crate) fn get() -> &'static Lexicon {
        static LEXICON: OnceLock<Lexicon> = OnceLock::new();
        LEXICON.get_or_init(|| Lexicon::build(CONCEPTS))
    }

    fn build(concepts: &[(&'static str, &[&str])]) -> Lexicon {
        let mut entries: HashMap<String, Vec<&'static str>> = HashMap::new();
        for (concept, words) in concepts {
            for entry in *words {
                let key = key(text::tokens(entry, false).iter().map(|t| t.stem.as_str()));
                let slot = entries.entry(key).or_default();
                if !slot.contains(concept) {
                    slot.push(concept);
                }
            }
        }
        Lexicon { entries }
    }

    /// The concepts named by these consecutive stems (empty if none).
    pub(crate) fn concepts<'a>(&self, stems: impl Iterator<Item = &'a str>) -> &[&'static str] {
        self.entries.get(&key(stems)).map(Vec::as_slice).unwrap_or(&[])
    }
}

fn key<'a>(stems: impl Iterator<Item = &'a str>) -> String {
    let mut k = String::new();
    for s in stems {
        if !k.is_empty() {
            k.push(' ');
        }
        k.push_str(s);
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_phrases_map_to_concepts_after_stemming() {
        let lex = Lexicon::get();
        assert_eq!(lex.concepts(["banana"].into_iter()), &[] as &[&str]);
        assert_eq!(
            lex.concepts([text::stem("vulnerabilities").as_str()].into_iter()),
            ["security"]
        );
        assert_eq!(lex.concepts([text::stem("mocking").as_str()].into_iter()), ["test"]);
        assert_eq!(lex.concepts(["pull", "request"].into_iter()), ["review"]);
        assert_eq!(lex.concepts(["out", "of", "memory"].into_iter()), ["perf"]);
    }

    #[test]
    fn no_single_word_entry_is_a_stopword() {
        // A stopword has no concepts of its own, so such an entry could never match.
        let bad: Vec<&str> = CONCEPTS
            .iter()
            .flat_map(|(_, words)| words.iter().copied())
            .filter(|w| {
                let tokens = text::tokens(w, false);
                tokens.len() == 1 && tokens[0].stop
            })
            .collect();
        assert!(bad.is_empty(), "stopwords: {bad:?}");
    }

    #[test]
    fn no_entry_is_longer_than_max_phrase() {
        let bad: Vec<&str> = CONCEPTS
            .iter()
            .flat_map(|(_, words)| words.iter().copied())
            .filter(|w| !(1..=MAX_PHRASE).contains(&text::tokens(w, false).len()))
            .collect();
        assert!(bad.is_empty(), "too long or empty: {bad:?}");
    }
}
