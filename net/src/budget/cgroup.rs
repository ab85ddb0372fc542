//! This process's own memory cgroup and the smallest limit on it.
//!
//! A memory limit applies to a group and to everything below it, so the limit on this
//! process is the smallest of its own group's and every ancestor's. Where the groups are
//! comes from two files: `/proc/self/cgroup` names the process's group in each hierarchy
//! (`0::/path` for cgroup v2, `N:memory,…:/path` for a v1 hierarchy with the memory
//! controller), and `/proc/self/mountinfo` says where each hierarchy is mounted and which
//! of its groups the mount shows as its root (inside a container without a cgroup
//! namespace the mount's root is the container's own group, not `/`).
//!
//! Everything here is a pure function of file contents; [`find_cgroup_limit`] reads
//! through the caller's reader, so other machines' files are test fixtures.

use std::fmt;
use std::path::{Path, PathBuf};

use super::Limit;

/// The process's group in each hierarchy.
pub const PROC_SELF_CGROUP: &str = "/proc/self/cgroup";
/// The mounts this process sees, cgroup filesystems among them.
pub const PROC_SELF_MOUNTINFO: &str = "/proc/self/mountinfo";

/// A cgroup v1 limit at or above this is "unlimited": no machine has 2^60 bytes, and the
/// kernel's unlimited value depends on the page size (`PAGE_COUNTER_MAX` × page size,
/// 9,223,372,036,854,771,712 on x86-64 with 4 KiB pages).
pub const CGROUP_V1_UNLIMITED: u64 = 1 << 60;

/// Which cgroup interface a limit came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    /// The legacy per-controller hierarchies (`memory.limit_in_bytes`).
    V1,
    /// The unified hierarchy (`memory.max`, `memory.high`).
    V2,
}

impl CgroupVersion {
    /// The limit files of a group, in the order they are read.
    pub fn limit_files(self) -> &'static [&'static str] {
        match self {
            CgroupVersion::V1 => &["memory.limit_in_bytes"],
            // `memory.high` throttles and reclaims rather than kills, but a server held
            // above it runs slowly: a budget under it keeps the server out of that.
            CgroupVersion::V2 => &["memory.max", "memory.high"],
        }
    }

    fn parse_limit(self, text: &str) -> Option<Limit> {
        match self {
            CgroupVersion::V1 => parse_cgroup_v1_limit_in_bytes(text),
            CgroupVersion::V2 => parse_cgroup_v2_memory_max(text),
        }
    }
}

impl fmt::Display for CgroupVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CgroupVersion::V1 => "cgroup v1",
            CgroupVersion::V2 => "cgroup v2",
        })
    }
}

/// Parses cgroup v2 `memory.max` or `memory.high`: a byte count, or `max` for none.
pub fn parse_cgroup_v2_memory_max(text: &str) -> Option<Limit> {
    match text.trim() {
        "max" => Some(Limit::Unlimited),
        number => number.parse().ok().map(Limit::Bytes),
    }
}

/// Parses cgroup v1 `memory.limit_in_bytes`: a byte count, [`CGROUP_V1_UNLIMITED`] or more
/// meaning none.
pub fn parse_cgroup_v1_limit_in_bytes(text: &str) -> Option<Limit> {
    let bytes: u64 = text.trim().parse().ok()?;
    Some(if bytes >= CGROUP_V1_UNLIMITED {
        Limit::Unlimited
    } else {
        Limit::Bytes(bytes)
    })
}

/// The process's group in one hierarchy that can limit memory: the v2 group, or the group
/// of the v1 hierarchy that carries the memory controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// Which interface.
    pub version: CgroupVersion,
    /// The group's path inside its hierarchy, e.g. `/system.slice/tickcast.service`.
    pub group: String,
}

/// The memberships of `/proc/self/cgroup` that can limit memory. A line is
/// `hierarchy-id:controllers:path`; v2 is `0::path`, a v1 line counts when its
/// comma-separated controllers include `memory` (`4:memory:/a`, `7:cpu,memory:/a`).
/// Malformed lines are skipped.
pub fn parse_proc_self_cgroup(text: &str) -> Vec<Membership> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, ':');
            let id = fields.next()?;
            let controllers = fields.next()?;
            let group = fields.next()?.trim_end();
            if !group.starts_with('/') {
                return None;
            }
            let version = if id == "0" && controllers.is_empty() {
                CgroupVersion::V2
            } else if controllers.split(',').any(|c| c == "memory") {
                CgroupVersion::V1
            } else {
                return None;
            };
            Some(Membership {
                version,
                group: group.to_owned(),
            })
        })
        .collect()
}

/// A mounted cgroup hierarchy that can limit memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    /// cgroup2, or a v1 cgroup mount with the memory controller.
    pub version: CgroupVersion,
    /// The group of the hierarchy the mount shows at its mount point (`/` unless the
    /// mount is of a subtree, as inside a container without a cgroup namespace).
    pub root: String,
    /// Where it is mounted.
    pub mount_point: PathBuf,
}

/// The cgroup mounts of `/proc/self/mountinfo` that can limit memory. A line is
/// `id parent major:minor root mount-point options [optional…] - fstype source
/// super-options`; paths escape space, tab, newline and backslash as octal (`\040`).
pub fn parse_mountinfo_cgroups(text: &str) -> Vec<CgroupMount> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let separator = fields.iter().position(|f| *f == "-")?;
            if separator < 6 {
                return None;
            }
            let fstype = *fields.get(separator + 1)?;
            let version = match fstype {
                "cgroup2" => CgroupVersion::V2,
                "cgroup"
                    if fields
                        .get(separator + 3)?
                        .split(',')
                        .any(|option| option == "memory") =>
                {
                    CgroupVersion::V1
                }
                _ => return None,
            };
            Some(CgroupMount {
                version,
                root: unescape_mountinfo(fields[3]),
                mount_point: PathBuf::from(unescape_mountinfo(fields[4])),
            })
        })
        .collect()
}

/// Decodes mountinfo's `\ooo` octal escapes.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = bytes.get(i + 1..i + 4).and_then(|digits| {
            let digits = std::str::from_utf8(digits).ok()?;
            u8::from_str_radix(digits, 8).ok()
        });
        match (bytes[i], escaped) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The smallest memory limit on this process's cgroups, and where it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupLimit {
    /// The limit in bytes.
    pub bytes: u64,
    /// The interface it came from.
    pub version: CgroupVersion,
    /// This process's group in that hierarchy (from `/proc/self/cgroup`).
    pub process_group: String,
    /// The group that sets the limit: the process's own or one of its ancestors.
    pub limiting_group: String,
    /// The file the limit was read from.
    pub file: PathBuf,
}

impl fmt::Display for CgroupLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.version, self.file.display())?;
        if self.limiting_group == self.process_group {
            write!(f, ", this process's group {}", self.process_group)
        } else {
            write!(
                f,
                " of group {}, an ancestor of this process's group {}",
                self.limiting_group, self.process_group
            )
        }
    }
}

/// The smallest memory limit on this process: every limit file of its group and of each
/// ancestor up to the mount's root, in every hierarchy that has one (v2, and v1 with the
/// memory controller; on a hybrid machine both, and the smaller wins). `None` when no
/// group is limited or the files are not there. Reads only through `read`.
pub fn find_cgroup_limit(read: impl Fn(&Path) -> Option<String>) -> Option<CgroupLimit> {
    let memberships = parse_proc_self_cgroup(&read(Path::new(PROC_SELF_CGROUP))?);
    let mounts = read(Path::new(PROC_SELF_MOUNTINFO))
        .map(|text| parse_mountinfo_cgroups(&text))
        .unwrap_or_default();
    let mut smallest: Option<CgroupLimit> = None;
    for membership in &memberships {
        for (group, directory) in group_directories(membership, &mounts) {
            for file_name in membership.version.limit_files() {
                let file = directory.join(file_name);
                let Some(Limit::Bytes(bytes)) = read(&file)
                    .as_deref()
                    .and_then(|text| membership.version.parse_limit(text))
                else {
                    continue;
                };
                if smallest.as_ref().is_none_or(|s| bytes < s.bytes) {
                    smallest = Some(CgroupLimit {
                        bytes,
                        version: membership.version,
                        process_group: membership.group.clone(),
                        limiting_group: group.clone(),
                        file,
                    });
                }
            }
        }
    }
    smallest
}

/// The process's group and its ancestors as (group path, directory), from the group up
/// to the root of the mount that shows it. Of several mounts of the hierarchy, the one
/// whose root is the deepest ancestor of the group (the most levels visible is not the
/// point; the deepest root is the one the group is certainly under). A group outside
/// every mount's root (it should not happen: a process sees its own group) gives the
/// mount points themselves, so a limit there is still honoured rather than ignored.
fn group_directories(membership: &Membership, mounts: &[CgroupMount]) -> Vec<(String, PathBuf)> {
    let candidates = || mounts.iter().filter(|m| m.version == membership.version);
    let containing = candidates()
        .filter_map(|mount| {
            relative_to_root(&membership.group, &mount.root).map(|relative| (mount, relative))
        })
        .max_by_key(|(mount, _)| mount.root.len());
    let Some((mount, relative)) = containing else {
        return candidates()
            .map(|mount| (mount.root.clone(), mount.mount_point.clone()))
            .collect();
    };
    let components: Vec<&str> = relative.split('/').filter(|c| !c.is_empty()).collect();
    (0..=components.len())
        .rev()
        .map(|depth| {
            let mut directory = mount.mount_point.clone();
            let mut group = mount.root.trim_end_matches('/').to_owned();
            for component in &components[..depth] {
                directory.push(component);
                group.push('/');
                group.push_str(component);
            }
            if group.is_empty() {
                group.push('/');
            }
            (group, directory)
        })
        .collect()
}

/// `group` below `root`, as a path relative to it (`""` for the root itself); `None`
/// when the group is not under the root.
fn relative_to_root<'a>(group: &'a str, root: &str) -> Option<&'a str> {
    let root = root.trim_end_matches('/');
    let rest = group.strip_prefix(root)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const MIB: u64 = 1 << 20;

    /// A reader over a fake filesystem.
    fn files(entries: &[(&str, &str)]) -> impl Fn(&Path) -> Option<String> + use<> {
        let map: HashMap<String, String> = entries
            .iter()
            .map(|(path, text)| (path.to_string(), text.to_string()))
            .collect();
        move |path| map.get(path.to_str()?).cloned()
    }

    #[test]
    fn cgroup_v2_max_is_unlimited_and_a_number_is_a_limit() {
        assert_eq!(parse_cgroup_v2_memory_max("max\n"), Some(Limit::Unlimited));
        assert_eq!(
            parse_cgroup_v2_memory_max("536870912\n"),
            Some(Limit::Bytes(512 * MIB))
        );
        assert_eq!(parse_cgroup_v2_memory_max(""), None);
        assert_eq!(parse_cgroup_v2_memory_max("lots"), None);
    }

    #[test]
    fn cgroup_v1_huge_limits_mean_unlimited() {
        // What an unlimited v1 group reads on x86-64 with 4 KiB pages (this machine).
        assert_eq!(
            parse_cgroup_v1_limit_in_bytes("9223372036854771712\n"),
            Some(Limit::Unlimited)
        );
        // The same with 64 KiB pages (arm64, ppc64le).
        assert_eq!(
            parse_cgroup_v1_limit_in_bytes("9223372036854710272\n"),
            Some(Limit::Unlimited)
        );
        assert_eq!(
            parse_cgroup_v1_limit_in_bytes("1152921504606846976"),
            Some(Limit::Unlimited)
        );
        assert_eq!(
            parse_cgroup_v1_limit_in_bytes("1073741824\n"),
            Some(Limit::Bytes(1024 * MIB))
        );
        assert_eq!(parse_cgroup_v1_limit_in_bytes("-1"), None);
    }

    #[test]
    fn proc_self_cgroup_names_the_v2_group_and_the_v1_memory_group() {
        // This machine: v1 controllers, a v2 hierarchy with none, memory nested.
        let text = "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/97b2be8d\n\
                    1:cpu:/\n0::/\n";
        assert_eq!(
            parse_proc_self_cgroup(text),
            vec![
                Membership {
                    version: CgroupVersion::V1,
                    group: "/process_api/97b2be8d".into()
                },
                Membership {
                    version: CgroupVersion::V2,
                    group: "/".into()
                },
            ]
        );
        // Co-mounted controllers; a controller whose name only contains "memory".
        assert_eq!(
            parse_proc_self_cgroup("5:cpu,memory:/a/b\n6:memory_x:/c\nbroken\n3:memory:rel\n"),
            vec![Membership {
                version: CgroupVersion::V1,
                group: "/a/b".into()
            }]
        );
    }

    #[test]
    fn mountinfo_lists_cgroup2_and_v1_memory_mounts_with_their_roots() {
        let text = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 /docker/abc /sys/fs/cgroup/memory rw,relatime shared:9 master:3 - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/cpu,memory rw - cgroup cgroup rw,cpu,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
42 31 0:39 / /mnt/with\\040space rw - cgroup2 none rw
43 31 0:40 / /truncated
";
        assert_eq!(
            parse_mountinfo_cgroups(text),
            vec![
                CgroupMount {
                    version: CgroupVersion::V1,
                    root: "/docker/abc".into(),
                    mount_point: "/sys/fs/cgroup/memory".into()
                },
                CgroupMount {
                    version: CgroupVersion::V1,
                    root: "/".into(),
                    mount_point: "/sys/fs/cgroup/cpu,memory".into()
                },
                CgroupMount {
                    version: CgroupVersion::V2,
                    root: "/".into(),
                    mount_point: "/sys/fs/cgroup/unified".into()
                },
                CgroupMount {
                    version: CgroupVersion::V2,
                    root: "/".into(),
                    mount_point: "/mnt/with space".into()
                },
            ]
        );
    }

    /// `/proc/self/mountinfo` of a pure cgroup v2 machine (systemd, no container).
    const MOUNTINFO_V2: &str = "\
22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw
26 22 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:2 - sysfs sysfs rw
30 26 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    /// `/proc/self/mountinfo` of a cgroup v1 machine (this one's layout).
    const MOUNTINFO_V1: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn v2_takes_the_smallest_of_the_group_and_its_ancestors() {
        let read = files(&[
            (PROC_SELF_CGROUP, "0::/system.slice/tickcast.service\n"),
            (PROC_SELF_MOUNTINFO, MOUNTINFO_V2),
            // The root group has no limit files.
            ("/sys/fs/cgroup/system.slice/memory.max", "1073741824\n"),
            ("/sys/fs/cgroup/system.slice/memory.high", "max\n"),
            (
                "/sys/fs/cgroup/system.slice/tickcast.service/memory.max",
                "max\n",
            ),
            (
                "/sys/fs/cgroup/system.slice/tickcast.service/memory.high",
                "805306368\n",
            ),
        ]);
        assert_eq!(
            find_cgroup_limit(read),
            Some(CgroupLimit {
                bytes: 768 * MIB,
                version: CgroupVersion::V2,
                process_group: "/system.slice/tickcast.service".into(),
                limiting_group: "/system.slice/tickcast.service".into(),
                file: "/sys/fs/cgroup/system.slice/tickcast.service/memory.high".into(),
            })
        );
    }

    #[test]
    fn v1_nested_takes_the_parents_limit_when_the_child_has_none() {
        let limit = find_cgroup_limit(files(&[
            (
                PROC_SELF_CGROUP,
                "4:memory:/process_api/job/child\n3:cpu:/\n0::/\n",
            ),
            (PROC_SELF_MOUNTINFO, MOUNTINFO_V1),
            (
                "/sys/fs/cgroup/memory/memory.limit_in_bytes",
                "9223372036854771712\n",
            ),
            (
                "/sys/fs/cgroup/memory/process_api/memory.limit_in_bytes",
                "9223372036854771712\n",
            ),
            (
                "/sys/fs/cgroup/memory/process_api/job/memory.limit_in_bytes",
                "100663296\n",
            ),
            (
                "/sys/fs/cgroup/memory/process_api/job/child/memory.limit_in_bytes",
                "268435456\n",
            ),
        ]))
        .expect("a limit");
        assert_eq!(limit.bytes, 96 * MIB);
        assert_eq!(limit.version, CgroupVersion::V1);
        assert_eq!(limit.process_group, "/process_api/job/child");
        assert_eq!(limit.limiting_group, "/process_api/job");
        assert_eq!(
            limit.file,
            Path::new("/sys/fs/cgroup/memory/process_api/job/memory.limit_in_bytes")
        );
        assert_eq!(
            limit.to_string(),
            "cgroup v1 /sys/fs/cgroup/memory/process_api/job/memory.limit_in_bytes of group \
             /process_api/job, an ancestor of this process's group /process_api/job/child"
        );
    }

    #[test]
    fn the_regression_a_nested_v1_group_is_not_the_unlimited_mount_root() {
        // Issue #12: the server read only /sys/fs/cgroup/memory/memory.limit_in_bytes
        // (unlimited) and budgeted the host's 23.5 GiB inside a 96 MiB group.
        let limit = find_cgroup_limit(files(&[
            (PROC_SELF_CGROUP, "4:memory:/tickcast-test\n0::/\n"),
            (PROC_SELF_MOUNTINFO, MOUNTINFO_V1),
            (
                "/sys/fs/cgroup/memory/memory.limit_in_bytes",
                "9223372036854771712\n",
            ),
            (
                "/sys/fs/cgroup/memory/tickcast-test/memory.limit_in_bytes",
                "100663296\n",
            ),
        ]));
        assert_eq!(limit.map(|l| l.bytes), Some(96 * MIB));
    }

    #[test]
    fn a_container_mount_root_is_the_groups_own_directory() {
        // Docker on cgroup v1 without a cgroup namespace: /proc/self/cgroup shows the
        // host's path, and the mount's root field is that same group, mounted at
        // /sys/fs/cgroup/memory. The host's ancestors are not visible.
        let limit = find_cgroup_limit(files(&[
            (
                PROC_SELF_CGROUP,
                "12:memory:/docker/4f1c\n11:cpu,cpuacct:/docker/4f1c\n1:name=systemd:/docker/4f1c\n",
            ),
            (
                PROC_SELF_MOUNTINFO,
                "680 679 0:61 /docker/4f1c /sys/fs/cgroup/memory ro,nosuid,nodev,noexec,relatime master:19 - cgroup cgroup rw,memory\n",
            ),
            (
                "/sys/fs/cgroup/memory/memory.limit_in_bytes",
                "134217728\n",
            ),
        ]))
        .expect("a limit");
        assert_eq!(limit.bytes, 128 * MIB);
        assert_eq!(limit.limiting_group, "/docker/4f1c");
        assert_eq!(
            limit.file,
            Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes")
        );

        // Kubernetes on v2 with a mount of a subtree: the pod's group is the root, the
        // container's group is below it, and the pod's limit is the smaller.
        let limit = find_cgroup_limit(files(&[
            (PROC_SELF_CGROUP, "0::/kubepods/pod9/ctr1\n"),
            (
                PROC_SELF_MOUNTINFO,
                "900 890 0:30 /kubepods/pod9 /sys/fs/cgroup ro,nosuid - cgroup2 cgroup rw\n",
            ),
            ("/sys/fs/cgroup/memory.max", "268435456\n"),
            ("/sys/fs/cgroup/ctr1/memory.max", "536870912\n"),
        ]))
        .expect("a limit");
        assert_eq!(limit.bytes, 256 * MIB);
        assert_eq!(limit.limiting_group, "/kubepods/pod9");
        assert_eq!(limit.process_group, "/kubepods/pod9/ctr1");

        // With a cgroup namespace (Docker's default on v2) the group is `/` and so is
        // the root.
        let limit = find_cgroup_limit(files(&[
            (PROC_SELF_CGROUP, "0::/\n"),
            (
                PROC_SELF_MOUNTINFO,
                "700 690 0:30 / /sys/fs/cgroup ro,nosuid - cgroup2 cgroup rw\n",
            ),
            ("/sys/fs/cgroup/memory.max", "536870912\n"),
        ]))
        .expect("a limit");
        assert_eq!(limit.bytes, 512 * MIB);
        assert_eq!(limit.limiting_group, "/");
    }

    #[test]
    fn a_hybrid_machine_reads_both_and_keeps_the_smaller() {
        // systemd's hybrid layout: controllers on v1, an empty v2 tree at unified/.
        let proc_cgroup = "4:memory:/user.slice\n0::/user.slice/session-1.scope\n";
        let mut entries = vec![
            (PROC_SELF_CGROUP, proc_cgroup),
            (PROC_SELF_MOUNTINFO, MOUNTINFO_V1),
            (
                "/sys/fs/cgroup/memory/user.slice/memory.limit_in_bytes",
                "2147483648\n",
            ),
        ];
        // The v2 tree has no memory controller: no limit files there.
        let limit = find_cgroup_limit(files(&entries)).expect("a limit");
        assert_eq!(
            (limit.bytes, limit.version),
            (2048 * MIB, CgroupVersion::V1)
        );
        // Were the v2 group limited lower, that would win.
        entries.push((
            "/sys/fs/cgroup/unified/user.slice/memory.max",
            "1073741824\n",
        ));
        let limit = find_cgroup_limit(files(&entries)).expect("a limit");
        assert_eq!(
            (limit.bytes, limit.version),
            (1024 * MIB, CgroupVersion::V2)
        );
        assert_eq!(limit.limiting_group, "/user.slice");
    }

    #[test]
    fn no_limit_anywhere_or_no_files_is_none() {
        assert_eq!(find_cgroup_limit(files(&[])), None);
        assert_eq!(
            find_cgroup_limit(files(&[
                (PROC_SELF_CGROUP, "4:memory:/a\n0::/\n"),
                (PROC_SELF_MOUNTINFO, MOUNTINFO_V1),
                (
                    "/sys/fs/cgroup/memory/memory.limit_in_bytes",
                    "9223372036854771712\n"
                ),
                ("/sys/fs/cgroup/memory/a/memory.limit_in_bytes", "garbage\n"),
            ])),
            None
        );
    }

    #[test]
    fn a_group_outside_every_mount_root_falls_back_to_the_mount_point() {
        let limit = find_cgroup_limit(files(&[
            (PROC_SELF_CGROUP, "4:memory:/elsewhere\n"),
            (
                PROC_SELF_MOUNTINFO,
                "35 31 0:32 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n",
            ),
            ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "134217728\n"),
        ]))
        .expect("a limit");
        assert_eq!(limit.bytes, 128 * MIB);
        assert_eq!(limit.limiting_group, "/docker/abc");
    }

    #[test]
    fn a_root_that_only_shares_a_prefix_is_not_an_ancestor() {
        assert_eq!(relative_to_root("/docker/abcdef", "/docker/abc"), None);
        assert_eq!(relative_to_root("/docker/abc/x", "/docker/abc"), Some("/x"));
        assert_eq!(relative_to_root("/docker/abc", "/docker/abc/"), Some(""));
        assert_eq!(relative_to_root("/a", "/"), Some("/a"));
    }
}
