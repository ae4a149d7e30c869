//! The process tree, read from `/proc/<pid>/stat`: which processes a test
//! started (directly or through its children), so that it can signal them,
//! wait for them, or look at their argv and environment.

use std::fs;

/// One process: its id, its parent's and its process group's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proc {
    pub pid: u32,
    pub ppid: u32,
    pub pgid: u32,
}

/// Every process this one can see in /proc (none without /proc).
pub fn processes() -> Vec<Proc> {
    let mut v = Vec::new();
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        if let Some((ppid, pgid)) = parse_stat(&stat) {
            v.push(Proc { pid, ppid, pgid });
        }
    }
    v
}

/// `(ppid, pgid)` from a `/proc/<pid>/stat` line: `pid (comm) state ppid
/// pgrp …`, where comm may hold spaces and parentheses, so the fields are
/// counted after the last `)`.
fn parse_stat(stat: &str) -> Option<(u32, u32)> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut f = rest.split_whitespace().skip(1);
    let ppid = f.next()?.parse().ok()?;
    let pgid = f.next()?.parse().ok()?;
    Some((ppid, pgid))
}

/// `root` and every process below it (children, their children, …),
/// `root` first.
pub fn descendants(root: u32) -> Vec<u32> {
    tree(root, |_| false)
}

/// `root`, every process below it, and every process in the process group
/// `root` leads (and everything below those): what `kill -- -PGID` and a
/// walk of the children together would reach.
pub fn process_group_tree(root: u32) -> Vec<u32> {
    tree(root, |p| p.pgid == root)
}

fn tree(root: u32, also: impl Fn(&Proc) -> bool) -> Vec<u32> {
    let all = processes();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        for p in &all {
            if (p.ppid == parent || also(p)) && !found.contains(&p.pid) {
                found.push(p.pid);
            }
        }
        i += 1;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_last_parenthesis() {
        assert_eq!(parse_stat("12 (sh) S 7 12 12 0"), Some((7, 12)));
        assert_eq!(parse_stat("13 (a ) b (c)) R 1 5 5 0"), Some((1, 5)));
        assert_eq!(parse_stat("14 (x"), None);
    }

    #[test]
    fn a_child_is_a_descendant() {
        if std::fs::symlink_metadata("/proc/self").is_err() {
            crate::testutil::host::skipped("/proc");
            return;
        }
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("spawn sleep");
        let found = descendants(std::process::id());
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(found[0], std::process::id());
        assert!(found.contains(&child.id()), "{found:?}");
    }
}
