//! What `iothub-local` prints and writes: `NAME='value'` lines a shell can `source` or `eval`
//! (connection strings hold `;`), the same as `export` lines in the `--env-out` file, and the
//! temporary files it removes when it stops.

use std::io::Write;
use std::path::{Path, PathBuf};

/// `value` single-quoted for a POSIX shell: `'` becomes `'\''`; nothing else is special
/// inside single quotes.
pub fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// The variables, in print order.
#[derive(Debug, Default)]
pub struct Variables(Vec<(String, String)>);

impl Variables {
    /// Adds (or replaces) `name`.
    pub fn set(&mut self, name: impl Into<String>, value: impl ToString) {
        let name = name.into();
        let value = value.to_string();
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some(entry) => entry.1 = value,
            None => self.0.push((name, value)),
        }
    }

    /// Whether `name` is set.
    pub fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(n, _)| n == name)
    }

    /// `NAME='value'` lines, as printed.
    pub fn lines(&self) -> impl Iterator<Item = String> + '_ {
        self.0
            .iter()
            .map(|(name, value)| format!("{name}={}", shell_quote(value)))
    }

    /// Writes `export NAME='value'` lines to `path` (owner-only: it holds keys), through a
    /// temporary file renamed into place so that a reader never sees half of it.
    pub fn write_env_file(&self, path: &Path) -> Result<(), String> {
        let mut text = String::from("# iothub-local: source this file (. FILE) in a POSIX shell\n");
        for line in self.lines() {
            text.push_str("export ");
            text.push_str(&line);
            text.push('\n');
        }
        let tmp = path.with_extension("tmp");
        write_private(&tmp, &text)?;
        std::fs::rename(&tmp, path).map_err(|e| format!("cannot write {}: {e}", path.display()))
    }
}

/// Writes `contents` to `path`, readable by the owner only (it may hold a private key).
pub fn write_private(path: &Path, contents: &str) -> Result<(), String> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(path)
        .and_then(|mut file| file.write_all(contents.as_bytes()))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Files written for this run only (the temporary CA and X.509 device files), removed when
/// the program stops (Ctrl-C, SIGTERM or an error after they were written).
#[derive(Debug, Default)]
pub struct TemporaryFiles(Vec<PathBuf>);

impl TemporaryFiles {
    /// Removes `path` at the end.
    pub fn add(&mut self, path: PathBuf) {
        self.0.push(path);
    }
}

impl Drop for TemporaryFiles {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// `id` as part of a variable name: ASCII letters and digits upper-cased, anything else `_`.
pub fn env_name(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_values_come_back_exactly_from_a_shell() {
        let tricky = "HostName=h;SharedAccessKey=a+b/c=;x='y' \"$HOME\" `id` \\ end";
        let mut vars = Variables::default();
        vars.set("A", tricky);
        vars.set("B", "plain");
        let path = std::env::temp_dir().join(format!("iothub-env-test-{}", std::process::id()));
        vars.write_env_file(&path).unwrap();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(". '{}' && printf '%s' \"$A\"", path.display()))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), tricky);
        let _ = std::fs::remove_file(&path);
    }
}
