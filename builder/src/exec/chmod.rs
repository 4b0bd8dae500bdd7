//! `--chmod` values: octal (`0755`) sets the mode; symbolic (`u=rwX,go=rX`, `+x`,
//! `g=u`) transforms each entry's own mode as chmod(1) does, so `X` gives execute to
//! directories and to files that already had it.

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chmod {
    Octal(u32),
    Symbolic(Vec<Clause>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clause {
    /// Bits of the classes named before the operator (`u`, `g`, `o`, `a`; none = all).
    who: u32,
    actions: Vec<(Op, Perm)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Remove,
    Set,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Perm {
    /// Bits from `rwxXst` (X resolved per entry).
    Bits { bits: u32, cond_x: bool },
    /// Copy another class's permissions: `g=u`.
    Copy(u32),
}

const USER: u32 = 0o4700;
const GROUP: u32 = 0o2070;
const OTHER: u32 = 0o1007;

impl Chmod {
    /// Parses a `--chmod` value; `None` if it is neither octal nor symbolic.
    pub fn parse(s: &str) -> Option<Chmod> {
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            return u32::from_str_radix(s, 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .map(Chmod::Octal);
        }
        s.split(',')
            .map(parse_clause)
            .collect::<Option<Vec<_>>>()
            .filter(|c| !c.is_empty())
            .map(Chmod::Symbolic)
    }

    /// The new permission bits (including setuid/setgid/sticky) of an entry whose
    /// current bits are `mode`.
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        let clauses = match self {
            Chmod::Octal(m) => return *m,
            Chmod::Symbolic(c) => c,
        };
        let mut mode = mode & 0o7777;
        for clause in clauses {
            for (op, perm) in &clause.actions {
                let bits = match *perm {
                    Perm::Bits { bits, cond_x } => {
                        let x = if cond_x && (is_dir || mode & 0o111 != 0) {
                            0o111
                        } else {
                            0
                        };
                        bits | x
                    }
                    Perm::Copy(class) => {
                        let v = match class {
                            USER => (mode >> 6) & 7,
                            GROUP => (mode >> 3) & 7,
                            _ => mode & 7,
                        };
                        (v << 6) | (v << 3) | v
                    }
                } & clause.who;
                mode = match op {
                    Op::Add => mode | bits,
                    Op::Remove => mode & !bits,
                    // `=` keeps a directory's setuid/setgid, as chmod(1) does.
                    Op::Set => {
                        let keep = if is_dir { 0o6000 } else { 0 };
                        (mode & !(clause.who & !keep)) | bits
                    }
                };
            }
        }
        mode
    }
}

fn parse_clause(s: &str) -> Option<Clause> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut who = 0;
    while i < b.len() {
        who |= match b[i] {
            b'u' => USER,
            b'g' => GROUP,
            b'o' => OTHER,
            b'a' => USER | GROUP | OTHER,
            _ => break,
        };
        i += 1;
    }
    if who == 0 {
        who = USER | GROUP | OTHER;
    }
    let mut actions = Vec::new();
    while i < b.len() {
        let op = match b[i] {
            b'+' => Op::Add,
            b'-' => Op::Remove,
            b'=' => Op::Set,
            _ => return None,
        };
        i += 1;
        let copy = match b.get(i) {
            Some(b'u') => Some(USER),
            Some(b'g') => Some(GROUP),
            Some(b'o') => Some(OTHER),
            _ => None,
        };
        if let Some(class) = copy {
            i += 1;
            actions.push((op, Perm::Copy(class)));
            continue;
        }
        let (mut bits, mut cond_x) = (0, false);
        while i < b.len() {
            match b[i] {
                b'r' => bits |= 0o444,
                b'w' => bits |= 0o222,
                b'x' => bits |= 0o111,
                b'X' => cond_x = true,
                b's' => bits |= 0o6000,
                b't' => bits |= 0o1000,
                _ => break,
            }
            i += 1;
        }
        actions.push((op, Perm::Bits { bits, cond_x }));
    }
    (!actions.is_empty()).then_some(Clause { who, actions })
}

#[cfg(test)]
mod tests {
    use super::Chmod;

    fn ap(spec: &str, mode: u32, dir: bool) -> u32 {
        Chmod::parse(spec)
            .unwrap_or_else(|| panic!("{spec}"))
            .apply(mode, dir)
    }

    #[test]
    fn octal_sets_the_mode() {
        assert_eq!(ap("755", 0o600, false), 0o755);
        assert_eq!(ap("0640", 0o777, true), 0o640);
        assert_eq!(ap("4755", 0, false), 0o4755);
        assert!(Chmod::parse("8").is_none());
        assert!(Chmod::parse("17777").is_none());
    }

    #[test]
    fn symbolic_modes_follow_chmod() {
        // The case users ask for: dirs 755, files 644, executables stay executable.
        assert_eq!(ap("u=rwX,go=rX", 0o600, false), 0o644);
        assert_eq!(ap("u=rwX,go=rX", 0o700, false), 0o755);
        assert_eq!(ap("u=rwX,go=rX", 0o700, true), 0o755);
        assert_eq!(ap("u=rwX,go=rX", 0o600, true), 0o755);
        assert_eq!(ap("+x", 0o644, false), 0o755);
        assert_eq!(ap("u+x", 0o644, false), 0o744);
        assert_eq!(ap("go-w", 0o666, false), 0o644);
        assert_eq!(ap("a+rX,go-w", 0o620, false), 0o644);
        assert_eq!(ap("g=u", 0o640, false), 0o660);
        assert_eq!(ap("o=", 0o777, false), 0o770);
        assert_eq!(ap("u+s", 0o755, false), 0o4755);
        assert_eq!(ap("+t", 0o777, true), 0o1777);
        assert_eq!(ap("u=rw,g=r,o=", 0o4777, false), 0o640);
        assert_eq!(ap("u=rwx", 0o2755, true), 0o2755);
        assert_eq!(ap("u+x,g+w-r", 0o644, false), 0o724);
    }

    #[test]
    fn nonsense_is_refused() {
        for bad in ["", "u", "z+x", "u+q", "u+x,", "+x,,g+w", "0o755", "rwx"] {
            assert!(Chmod::parse(bad).is_none(), "{bad:?}");
        }
    }
}
