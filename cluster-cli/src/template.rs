//! Command templates in the style of GNU parallel: `convert {} {.}.png ::: a.jpg b.jpg`.
//!
//! Pure functions, no I/O. A template is a list of words (the program and its arguments as
//! typed after `--`); each *argument set* (one `:::` combination, or one input line split into
//! columns) turns it into one command line by replacing placeholders:
//!
//! | placeholder | replaced by |
//! |---|---|
//! | `{}` | the whole argument (columns joined by a space) |
//! | `{.}` | it without its extension (`a/b.tar.gz` → `a/b.tar`) |
//! | `{/}` | its basename (`a/b.jpg` → `b.jpg`) |
//! | `{//}` | its directory (`a/b.jpg` → `a`, `b.jpg` → `.`) |
//! | `{/.}` | basename without extension (`a/b.jpg` → `b`) |
//! | `{#}` | the task's sequence number, from 1 |
//! | `{N}` `{N.}` `{N/}` `{N//}` `{N/.}` | the same for column N (from 1) |
//!
//! A template with no placeholder at all gets the columns appended as extra words, as GNU
//! parallel does. Braces that are not a placeholder (`awk '{print $1}'`) stay as they are.
//!
//! Without a shell, each template word becomes exactly one argument, whatever the value holds
//! (spaces, quotes, `;`), so no value can inject anything. In shell mode the words are joined
//! into one `sh -c` script and every substituted value is single-quoted.

use std::fmt;

/// What part of a value a placeholder takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Whole,
    NoExtension,
    Basename,
    Dirname,
    BasenameNoExtension,
}

/// Which value a placeholder takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// All columns joined by a space.
    All,
    /// Column N, counted from 1.
    Column(usize),
    /// The task's sequence number.
    Sequence,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Slot(Source, Part),
}

/// Why an argument set does not fit a template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The template is empty.
    #[error("no command given: write it after `--`, e.g. `cluster map -- echo {{}} ::: a b`")]
    Empty,
    /// A placeholder names a column the argument set does not have.
    #[error("placeholder {{{column}}} needs column {column} but argument {argument:?} has only {columns} column(s); split lines into columns with --colsep, or give more `:::` groups")]
    MissingColumn {
        /// The column asked for.
        column: usize,
        /// Columns present.
        columns: usize,
        /// The argument set, joined.
        argument: String,
    },
}

/// A parsed command template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    words: Vec<Vec<Piece>>,
    shell: bool,
    has_slots: bool,
}

/// One ready command: program and arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLine {
    /// Program to run.
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
}

impl fmt::Display for CommandLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&shell_quote(&self.program))?;
        for a in &self.args {
            write!(f, " {}", shell_quote(a))?;
        }
        Ok(())
    }
}

fn parse_slot(inner: &str) -> Option<(Source, Part)> {
    if inner == "#" {
        return Some((Source::Sequence, Part::Whole));
    }
    let digits = inner.bytes().take_while(u8::is_ascii_digit).count();
    let (number, rest) = inner.split_at(digits);
    let source = if number.is_empty() {
        Source::All
    } else {
        match number.parse::<usize>() {
            Ok(n) if n >= 1 => Source::Column(n),
            _ => return None,
        }
    };
    let part = match rest {
        "" => Part::Whole,
        "." => Part::NoExtension,
        "/" => Part::Basename,
        "//" => Part::Dirname,
        "/." => Part::BasenameNoExtension,
        _ => return None,
    };
    Some((source, part))
}

fn parse_word(word: &str) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut rest = word;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let slot = after
            .find('}')
            .and_then(|close| parse_slot(&after[..close]).map(|s| (s, close)));
        match slot {
            Some(((source, part), close)) => {
                text.push_str(&rest[..open]);
                if !text.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut text)));
                }
                pieces.push(Piece::Slot(source, part));
                rest = &after[close + 1..];
            }
            None => {
                text.push_str(&rest[..=open]);
                rest = after;
            }
        }
    }
    text.push_str(rest);
    if !text.is_empty() || pieces.is_empty() {
        pieces.push(Piece::Text(text));
    }
    pieces
}

/// `value` with its extension removed: only in the last path component, and a leading dot
/// (`.bashrc`) is not an extension.
pub fn strip_extension(value: &str) -> &str {
    let start = value.rfind('/').map_or(0, |i| i + 1);
    match value[start..].rfind('.') {
        Some(dot) if dot > 0 => &value[..start + dot],
        _ => value,
    }
}

/// The last path component of `value` (trailing slashes ignored).
pub fn basename(value: &str) -> &str {
    let trimmed = value.trim_end_matches('/');
    if trimmed.is_empty() {
        return if value.is_empty() { "" } else { "/" };
    }
    trimmed.rsplit('/').next().unwrap_or(trimmed)
}

/// Everything before the last path component (`.` when there is none).
pub fn dirname(value: &str) -> &str {
    let trimmed = value.trim_end_matches('/');
    match trimmed.rfind('/') {
        Some(0) => "/",
        Some(i) => &trimmed[..i],
        None if value.starts_with('/') => "/",
        None => ".",
    }
}

fn apply(part: Part, value: &str) -> String {
    match part {
        Part::Whole => value.to_owned(),
        Part::NoExtension => strip_extension(value).to_owned(),
        Part::Basename => basename(value).to_owned(),
        Part::Dirname => dirname(value).to_owned(),
        Part::BasenameNoExtension => strip_extension(basename(value)).to_owned(),
    }
}

/// `value` quoted for a POSIX shell (unchanged when it needs no quoting).
pub fn shell_quote(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=+,@%^".contains(&b));
    if plain {
        value.to_owned()
    } else {
        format!("'{}'", value.replace('\'', "'\\''"))
    }
}

impl Template {
    /// Parses template words. `shell`: run the joined words with `sh -c` (values are quoted).
    pub fn parse(words: &[String], shell: bool) -> Result<Template, TemplateError> {
        if words.is_empty() || words.iter().all(|w| w.is_empty()) {
            return Err(TemplateError::Empty);
        }
        let words: Vec<Vec<Piece>> = words.iter().map(|w| parse_word(w)).collect();
        let has_slots = words.iter().flatten().any(|p| matches!(p, Piece::Slot(..)));
        Ok(Template {
            words,
            shell,
            has_slots,
        })
    }

    /// True when the template runs through `sh -c`.
    pub fn shell(&self) -> bool {
        self.shell
    }

    /// The command for one argument set (`columns`), the `seq`-th task (from 1).
    pub fn render(&self, columns: &[String], seq: usize) -> Result<CommandLine, TemplateError> {
        let value = |source: Source, part: Part| -> Result<String, TemplateError> {
            let raw = match source {
                Source::All => columns.join(" "),
                Source::Sequence => seq.to_string(),
                Source::Column(n) => match columns.get(n - 1) {
                    Some(v) => v.clone(),
                    None => {
                        return Err(TemplateError::MissingColumn {
                            column: n,
                            columns: columns.len(),
                            argument: columns.join(" "),
                        })
                    }
                },
            };
            let v = apply(part, &raw);
            Ok(if self.shell { shell_quote(&v) } else { v })
        };
        let mut out: Vec<String> = Vec::with_capacity(self.words.len() + columns.len());
        for word in &self.words {
            let mut s = String::new();
            for piece in word {
                match piece {
                    Piece::Text(t) => s.push_str(t),
                    Piece::Slot(source, part) => s.push_str(&value(*source, *part)?),
                }
            }
            out.push(s);
        }
        if !self.has_slots {
            for c in columns {
                out.push(if self.shell {
                    shell_quote(c)
                } else {
                    c.clone()
                });
            }
        }
        if self.shell {
            return Ok(CommandLine {
                program: "sh".into(),
                args: vec!["-c".into(), out.join(" ")],
            });
        }
        let mut words = out.into_iter();
        let program = words.next().unwrap_or_default();
        Ok(CommandLine {
            program,
            args: words.collect(),
        })
    }
}

/// Splits the words after `cluster map --` into the template and its `:::` groups.
pub fn split_groups(words: &[String]) -> (Vec<String>, Vec<Vec<String>>) {
    let mut parts = words.split(|w| w == ":::");
    let template = parts.next().unwrap_or_default().to_vec();
    let groups = parts.map(<[String]>::to_vec).collect();
    (template, groups)
}

/// Every combination of one value from each group, the first group varying slowest (as GNU
/// parallel does); no groups give no argument sets.
pub fn combinations(groups: &[Vec<String>]) -> Vec<Vec<String>> {
    if groups.is_empty() || groups.iter().any(Vec::is_empty) {
        return Vec::new();
    }
    let total: usize = groups.iter().map(Vec::len).product();
    let mut out = Vec::with_capacity(total);
    let mut index = vec![0usize; groups.len()];
    for _ in 0..total {
        out.push(
            index
                .iter()
                .zip(groups)
                .map(|(&i, g)| g[i].clone())
                .collect(),
        );
        for k in (0..groups.len()).rev() {
            index[k] += 1;
            if index[k] < groups[k].len() {
                break;
            }
            index[k] = 0;
        }
    }
    out
}

/// One input line as columns: split at `colsep` when given, else the whole line. A trailing
/// `\r` is dropped (files from Windows).
pub fn columns(line: &str, colsep: Option<&str>) -> Vec<String> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    match colsep {
        Some(sep) if !sep.is_empty() => line.split(sep).map(str::to_owned).collect(),
        _ => vec![line.to_owned()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_owned).collect()
    }

    fn render(t: &str, cols: &[&str]) -> Vec<String> {
        let t = Template::parse(&words(t), false).unwrap();
        let cols: Vec<String> = cols.iter().map(|s| s.to_string()).collect();
        let c = t.render(&cols, 7).unwrap();
        std::iter::once(c.program).chain(c.args).collect()
    }

    #[test]
    fn placeholders_like_gnu_parallel() {
        assert_eq!(
            render("convert {} {.}.png", &["dir/a.jpg"]),
            ["convert", "dir/a.jpg", "dir/a.png"]
        );
        assert_eq!(render("echo {/}", &["x/y/z.tar.gz"]), ["echo", "z.tar.gz"]);
        assert_eq!(render("echo {/.}", &["x/y/z.tar.gz"]), ["echo", "z.tar"]);
        assert_eq!(render("echo {//}", &["x/y/z"]), ["echo", "x/y"]);
        assert_eq!(render("echo {//}", &["z"]), ["echo", "."]);
        assert_eq!(render("echo {#}", &["z"]), ["echo", "7"]);
        assert_eq!(
            render("cp {1} {2}/{1/}", &["a/f.txt", "out"]),
            ["cp", "a/f.txt", "out/f.txt"]
        );
        assert_eq!(render("echo {}", &["a", "b"]), ["echo", "a b"]);
        assert_eq!(render("echo pre{}post", &["x"]), ["echo", "prexpost"]);
        assert_eq!(render("echo {1.}", &["x.c"]), ["echo", "x"]);
    }

    #[test]
    fn no_placeholder_appends_the_columns() {
        assert_eq!(render("gzip -k", &["a", "b"]), ["gzip", "-k", "a", "b"]);
        assert_eq!(render("true", &["x"]), ["true", "x"]);
    }

    #[test]
    fn other_braces_stay() {
        assert_eq!(
            render("awk {print$1} {}", &["f"]),
            ["awk", "{print$1}", "f"]
        );
        assert_eq!(
            render("echo {0} {x} { {", &["f"]),
            ["echo", "{0}", "{x}", "{", "{", "f"]
        );
        assert_eq!(render("echo }{}{", &["f"]), ["echo", "}f{"]);
    }

    #[test]
    fn values_never_split_or_inject() {
        assert_eq!(
            render("echo {}", &["a b; rm -rf /"]),
            ["echo", "a b; rm -rf /"]
        );
        let t = Template::parse(&["echo {} | wc -c".to_owned()], true).unwrap();
        let c = t.render(&["it's $HOME".to_owned()], 1).unwrap();
        assert_eq!(c.program, "sh");
        assert_eq!(c.args, ["-c", "echo 'it'\\''s $HOME' | wc -c"]);
    }

    #[test]
    fn missing_column_is_an_error() {
        let t = Template::parse(&words("echo {3}"), false).unwrap();
        let err = t.render(&["a".into(), "b".into()], 1).unwrap_err();
        assert!(matches!(
            err,
            TemplateError::MissingColumn {
                column: 3,
                columns: 2,
                ..
            }
        ));
        assert!(err.to_string().contains("--colsep"));
        assert_eq!(Template::parse(&[], false), Err(TemplateError::Empty));
    }

    #[test]
    fn path_helpers() {
        assert_eq!(strip_extension("a/b.tar.gz"), "a/b.tar");
        assert_eq!(strip_extension("dir.d/file"), "dir.d/file");
        assert_eq!(strip_extension(".bashrc"), ".bashrc");
        assert_eq!(strip_extension("x/.bashrc"), "x/.bashrc");
        assert_eq!(basename("a/b/"), "b");
        assert_eq!(basename("/"), "/");
        assert_eq!(dirname("/a"), "/");
        assert_eq!(dirname("a/b/c"), "a/b");
    }

    #[test]
    fn groups_and_combinations() {
        let (t, g) = split_groups(&words("echo {1} {2} ::: a b ::: 1 2 3"));
        assert_eq!(t, ["echo", "{1}", "{2}"]);
        assert_eq!(g.len(), 2);
        let c = combinations(&g);
        assert_eq!(c.len(), 6);
        assert_eq!(c[0], ["a", "1"]);
        assert_eq!(c[1], ["a", "2"]);
        assert_eq!(c[5], ["b", "3"]);
        assert!(combinations(&[]).is_empty());
        let (t, g) = split_groups(&words("echo hi"));
        assert_eq!(t.len(), 2);
        assert!(g.is_empty());
    }

    #[test]
    fn lines_to_columns() {
        assert_eq!(columns("a\tb\r", Some("\t")), ["a", "b"]);
        assert_eq!(columns("a b", None), ["a b"]);
        assert_eq!(columns("a,b,", Some(",")), ["a", "b", ""]);
    }

    #[test]
    fn display_quotes() {
        let c = CommandLine {
            program: "echo".into(),
            args: vec!["a b".into(), "x".into()],
        };
        assert_eq!(c.to_string(), "echo 'a b' x");
    }
}
