//! Golden bytes: every format weft writes to the wire or to disk is
//! compared with bytes committed under the crate's `tests/golden/`, so a
//! change to a format fails a test and becomes a decision. Files are hex,
//! 32 bytes a line, with `#` comments, so a diff shows what moved.
//!
//! `WEFT_BLESS=1 cargo test` writes the current bytes instead of checking
//! them; the commit then shows the change. Files under
//! `tests/golden/previous/` are the last release's and are never blessed:
//! the current decoders must still read them (see ARCHITECTURE.md, "Rolling
//! upgrades").

#![forbid(unsafe_code)]

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
};

/// The golden files of the crate at `manifest_dir`.
pub struct Golden {
    dir: PathBuf,
}

impl Golden {
    /// Pass `env!("CARGO_MANIFEST_DIR")`.
    pub fn new(manifest_dir: &str) -> Golden {
        Golden {
            dir: Path::new(manifest_dir).join("tests/golden"),
        }
    }

    /// Fails unless `bytes` equal the committed `name`; with
    /// `WEFT_BLESS=1`, writes them (with `about` as the comment) instead.
    pub fn check(&self, name: &str, about: &str, bytes: &[u8]) {
        let path = self.dir.join(format!("{name}.hex"));
        if std::env::var_os("WEFT_BLESS").is_some_and(|v| v == "1") {
            fs::create_dir_all(&self.dir).expect("create tests/golden");
            fs::write(&path, to_hex(about, bytes)).expect("write a golden file");
            return;
        }
        let want = read(&path);
        if want != bytes {
            panic!(
                "{name}: the encoding changed.\n  committed {}\n  now       {}\n\
                 If the change is meant, bless it (WEFT_BLESS=1) and follow the rolling-upgrade \
                 rule in ARCHITECTURE.md.",
                hex_line(&want),
                hex_line(bytes)
            );
        }
    }

    /// Like [`Golden::check`] for text (a parsed form, say): compared
    /// line by line with the committed `name.txt`.
    pub fn check_text(&self, name: &str, text: &str) {
        let path = self.dir.join(format!("{name}.txt"));
        if std::env::var_os("WEFT_BLESS").is_some_and(|v| v == "1") {
            fs::create_dir_all(&self.dir).expect("create tests/golden");
            fs::write(&path, text).expect("write a golden file");
            return;
        }
        let want = fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; create it with WEFT_BLESS=1", path.display()));
        for (i, (w, n)) in want.lines().zip(text.lines()).enumerate() {
            assert_eq!(w, n, "{name}.txt line {}: what it parses to changed", i + 1);
        }
        assert_eq!(
            want.lines().count(),
            text.lines().count(),
            "{name}.txt: a different number of lines"
        );
    }

    /// The committed bytes of `name` (for instance `previous/hello`).
    pub fn bytes(&self, name: &str) -> Vec<u8> {
        read(&self.dir.join(format!("{name}.hex")))
    }

    /// The last release's files (`previous/`): each kind (the file name
    /// without `.hex`) with its bytes, sorted; there must be some.
    pub fn previous(&self) -> Vec<(String, Vec<u8>)> {
        let dir = self.dir.join("previous");
        let mut files: Vec<(String, Vec<u8>)> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                let kind = name.strip_suffix(".hex")?.to_string();
                Some((kind, read(&dir.join(&name))))
            })
            .collect();
        assert!(
            !files.is_empty(),
            "{} holds the last release's bytes",
            dir.display()
        );
        files.sort();
        files
    }
}

fn read(path: &Path) -> Vec<u8> {
    let text = fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; create it with WEFT_BLESS=1 if the format is new",
            path.display()
        )
    });
    from_hex(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn to_hex(about: &str, bytes: &[u8]) -> String {
    let mut out = String::new();
    for line in about.lines() {
        let _ = writeln!(out, "# {line}");
    }
    for chunk in bytes.chunks(32) {
        out += &hex_line(chunk);
        out.push('\n');
    }
    out
}

fn hex_line(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(text: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(|l| l.bytes().filter(|b| !b.is_ascii_whitespace()))
        .collect();
    if !digits.len().is_multiple_of(2) {
        return Err("an odd number of hex digits".into());
    }
    digits
        .chunks(2)
        .map(|pair| {
            let s = std::str::from_utf8(pair).map_err(|e| e.to_string())?;
            u8::from_str_radix(s, 16).map_err(|_| format!("{s:?} is not hex"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_files_round_trip_and_comments_are_skipped() {
        let bytes: Vec<u8> = (0..70).collect();
        let text = to_hex("a format\nover two lines", &bytes);
        assert!(text.starts_with("# a format\n# over two lines\n000102"));
        assert_eq!(text.lines().count(), 2 + 3);
        assert_eq!(from_hex(&text).unwrap(), bytes);
        assert!(from_hex("0").is_err());
        assert!(from_hex("zz").is_err());
    }
}
