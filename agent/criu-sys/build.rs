//! Finds libcriu (headers + library), generates bindings with bindgen and
//! tells cargo how to link it.
//!
//! Lookup order, per setting: the env vars `CRIU_INCLUDE_DIR`, `CRIU_LIB_DIR`
//! and `CRIU_BIN`; then the `criu.env` written by
//! `packaging/criu/provision-criu.sh` (in `$UNDERSTUDY_CRIU_CACHE`, default
//! `/var/cache/understudy/criu`); then a system CRIU (`pkg-config criu`, or
//! `/usr/include/criu`) whose headers are at least 4.2.
//!
//! When the library dir has `libcriu.a` and `libprotobuf-c.a` both are linked
//! statically, so binaries need no runtime library path (the provisioned lib
//! dir only holds links into a private root with a newer glibc, which must
//! never be on a search path at run time). Otherwise libcriu is linked
//! dynamically.

use std::collections::HashMap;
use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const DEFAULT_CACHE: &str = "/var/cache/understudy/criu";
const MIN_VERSION: (u32, u32) = (4, 2);
const HINT: &str = "run packaging/criu/provision-criu.sh as root first \
     (or set CRIU_INCLUDE_DIR and CRIU_LIB_DIR)";

fn main() {
    for var in [
        "CRIU_INCLUDE_DIR",
        "CRIU_LIB_DIR",
        "CRIU_BIN",
        "UNDERSTUDY_CRIU_CACHE",
        "PKG_CONFIG_PATH",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo:rerun-if-changed=wrapper.h");
    println!("cargo:rerun-if-changed=build.rs");

    let cache = env::var_os("UNDERSTUDY_CRIU_CACHE")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_CACHE), PathBuf::from);
    let env_file_path = cache.join("criu.env");
    // Watched even while missing, so provisioning later triggers a rebuild.
    println!("cargo:rerun-if-changed={}", env_file_path.display());
    let env_file = std::fs::read_to_string(&env_file_path)
        .map(|text| parse_env_file(&text))
        .unwrap_or_default();
    let setting = |key: &str| {
        env::var(key)
            .ok()
            .or_else(|| env_file.get(key).cloned())
            .filter(|v| !v.is_empty())
    };

    let (include_dir, lib_dir) = match (setting("CRIU_INCLUDE_DIR"), setting("CRIU_LIB_DIR")) {
        (Some(inc), Some(lib)) => (PathBuf::from(inc), Some(PathBuf::from(lib))),
        (inc, lib) => match system_criu() {
            Some((sys_inc, sys_lib)) => (
                inc.map_or(sys_inc, PathBuf::from),
                lib.map(PathBuf::from).or(sys_lib),
            ),
            None => fail(&format!(
                "libcriu not found: no CRIU_INCLUDE_DIR/CRIU_LIB_DIR, no {} and no system \
                 libcriu >= {}.{} (pkg-config criu / /usr/include/criu)",
                env_file_path.display(),
                MIN_VERSION.0,
                MIN_VERSION.1
            )),
        },
    };
    if !include_dir.join("criu/criu.h").is_file() {
        fail(&format!(
            "{}/criu/criu.h does not exist",
            include_dir.display()
        ));
    }
    check_header_version(&include_dir);

    link(lib_dir.as_deref());

    let default_bin = setting("CRIU_BIN")
        .or_else(find_system_criu_bin)
        .unwrap_or_default();
    println!("cargo:rustc-env=CRIU_DEFAULT_BIN={default_bin}");

    generate_bindings(&include_dir);
}

fn fail(msg: &str) -> ! {
    panic!("criu-sys: {msg}; {HINT}");
}

/// Static linking when both archives are there, else dynamic.
fn link(lib_dir: Option<&Path>) {
    let has = |name: &str| lib_dir.is_some_and(|d| d.join(name).is_file());
    if let Some(dir) = lib_dir {
        println!("cargo:rustc-link-search=native={}", dir.display());
    }
    if has("libcriu.a") && has("libprotobuf-c.a") {
        // Order matters: libcriu uses protobuf-c.
        println!("cargo:rustc-link-lib=static=criu");
        println!("cargo:rustc-link-lib=static=protobuf-c");
    } else {
        println!(
            "cargo:warning=criu-sys: no libcriu.a + libprotobuf-c.a in {}; linking libcriu dynamically",
            lib_dir.map_or_else(|| "the system lib dirs".into(), |d| d.display().to_string())
        );
        println!("cargo:rustc-link-lib=dylib=criu");
    }
}

/// A system libcriu: `(include dir, lib dir)` if its headers are new enough.
fn system_criu() -> Option<(PathBuf, Option<PathBuf>)> {
    let pkg = |arg: &str| {
        let out = Command::new("pkg-config")
            .args([arg, "criu"])
            .output()
            .ok()?;
        let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
        (out.status.success() && !s.is_empty()).then_some(s)
    };
    let candidates = [
        pkg("--variable=includedir").map(PathBuf::from),
        Some(PathBuf::from("/usr/include")),
        Some(PathBuf::from("/usr/local/include")),
    ];
    let include = candidates.into_iter().flatten().find(|dir| {
        dir.join("criu/criu.h").is_file() && header_version(dir).is_some_and(|v| v >= MIN_VERSION)
    })?;
    Some((include, pkg("--variable=libdir").map(PathBuf::from)))
}

fn find_system_criu_bin() -> Option<String> {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join("criu"))
        .find(|p| p.is_file())
        .map(|p| p.display().to_string())
}

/// `(major, minor)` from `criu/version.h`.
fn header_version(include_dir: &Path) -> Option<(u32, u32)> {
    let text = std::fs::read_to_string(include_dir.join("criu/version.h")).ok()?;
    let define = |name: &str| {
        text.lines().find_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("#define") && words.next() == Some(name))
                .then(|| words.next()?.parse().ok())
                .flatten()
        })
    };
    Some((define("CRIU_VERSION_MAJOR")?, define("CRIU_VERSION_MINOR")?))
}

fn check_header_version(include_dir: &Path) {
    match header_version(include_dir) {
        Some(v) if v >= MIN_VERSION => {}
        Some((major, minor)) => fail(&format!(
            "libcriu headers in {} are {major}.{minor}, need >= {}.{}",
            include_dir.display(),
            MIN_VERSION.0,
            MIN_VERSION.1
        )),
        None => fail(&format!(
            "cannot read the version from {}/criu/version.h",
            include_dir.display()
        )),
    }
}

fn generate_bindings(include_dir: &Path) {
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap_or_default()).join("bindings.rs");
    let bindings = bindgen::Builder::default()
        .header("wrapper.h")
        .clang_arg(format!("-I{}", include_dir.display()))
        // Everything criu.h and version.h declare: the `criu_*` functions and
        // types and the `CRIU_*` constants. (Name patterns would also match
        // rpc.pb-c.h's protobuf-c code, `criu_req__pack`, `CRIU_REQ_TYPE__DUMP`...)
        .allowlist_file(".*/criu/criu\\.h")
        .allowlist_file(".*/criu/version\\.h")
        // Only ever handled by pointer: keeps rpc.pb-c.h and protobuf-c out.
        .allowlist_type("CriuNotify")
        .opaque_type("CriuNotify")
        .prepend_enum_name(false)
        .generate_comments(false)
        .layout_tests(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate();
    match bindings {
        Ok(b) => {
            if let Err(e) = b.write_to_file(&out) {
                fail(&format!("cannot write {}: {e}", out.display()));
            }
        }
        Err(e) => fail(&format!(
            "bindgen failed on {}/criu/criu.h: {e}",
            include_dir.display()
        )),
    }
}

/// `KEY=value` lines; values may be shell-quoted (as bash's `printf %q` does).
fn parse_env_file(text: &str) -> HashMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let l = l.strip_prefix("export ").unwrap_or(l);
            let (key, value) = l.split_once('=')?;
            Some((key.trim().to_string(), shell_unquote(value.trim())))
        })
        .collect()
}

/// Undoes POSIX shell quoting: `\x`, `'...'`, `"..."` and bash's `$'...'`.
fn shell_unquote(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            '\'' => out.extend(chars.by_ref().take_while(|&c| c != '\'')),
            '"' => {
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' if matches!(chars.peek(), Some('"' | '\\' | '$' | '`')) => {
                            out.extend(chars.next());
                        }
                        c => out.push(c),
                    }
                }
            }
            '$' if chars.peek() == Some(&'\'') => {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '\'' => break,
                        '\\' => match chars.next() {
                            Some('n') => out.push('\n'),
                            Some('t') => out.push('\t'),
                            Some('r') => out.push('\r'),
                            Some('e' | 'E') => out.push('\x1b'),
                            Some(c) => out.push(c),
                            None => {}
                        },
                        c => out.push(c),
                    }
                }
            }
            c => out.push(c),
        }
    }
    out
}
