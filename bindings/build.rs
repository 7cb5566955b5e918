//! Generates the DPDK bindings from the system's headers and builds the C shim.
//!
//! Everything comes from `pkg-config libdpdk`, unchanged: the include paths,
//! `-include rte_config.h` and the `-march` that the installed DPDK was built
//! with go to both bindgen and the C compiler, so the shim sees the same
//! struct layouts as the libraries.

use std::env;
use std::path::PathBuf;
use std::process::Command;

const MIN_VERSION: (u32, u32) = (22, 11);
const INSTALL_HINT: &str =
    "install the Debian packages: apt-get install -y libdpdk-dev libipsec-mb-dev pkg-config clang libclang-dev";

fn pkg_config(args: &[&str]) -> String {
    let output = match Command::new("pkg-config").args(args).arg("libdpdk").output() {
        Ok(output) => output,
        Err(err) => panic!("\n\ndpdk-sys: cannot run pkg-config ({err}); {INSTALL_HINT}\n\n"),
    };
    if !output.status.success() {
        panic!(
            "\n\ndpdk-sys: pkg-config cannot find libdpdk (DPDK {}.{} or newer is required); {INSTALL_HINT}\n{}\n",
            MIN_VERSION.0,
            MIN_VERSION.1,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    String::from_utf8(output.stdout).expect("pkg-config prints UTF-8").trim().to_owned()
}

fn check_version(version: &str) {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if found < MIN_VERSION {
        panic!(
            "\n\ndpdk-sys: found DPDK {version}, need {}.{} or newer; {INSTALL_HINT}\n\n",
            MIN_VERSION.0, MIN_VERSION.1
        );
    }
}

fn main() {
    println!("cargo:rerun-if-changed=wrapper.h");
    println!("cargo:rerun-if-changed=shim.h");
    println!("cargo:rerun-if-changed=shim.c");
    println!("cargo:rerun-if-changed=ipsecmb_shim.h");
    println!("cargo:rerun-if-changed=ipsecmb_shim.c");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");

    check_version(&pkg_config(&["--modversion"]));
    let cflags: Vec<String> =
        pkg_config(&["--cflags"]).split_whitespace().map(str::to_owned).collect();
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());

    // The shim first: the linker resolves its DPDK references from the libraries after it.
    let mut shim = cc::Build::new();
    shim.file("shim.c").include(&manifest_dir).opt_level(3).warnings(true);
    for flag in &cflags {
        shim.flag(flag);
    }
    shim.compile("sekisho_dpdk_shim");

    // AES-GCM from Intel IPsec-MB, the library under DPDK's crypto_aesni_gcm.
    if !std::path::Path::new("/usr/include/intel-ipsec-mb.h").exists() {
        panic!("\n\ndpdk-sys: intel-ipsec-mb.h not found; {INSTALL_HINT}\n\n");
    }
    cc::Build::new()
        .file("ipsecmb_shim.c")
        .include(&manifest_dir)
        .define("LINUX", None)
        .opt_level(3)
        .warnings(true)
        .compile("sekisho_ipsecmb_shim");
    println!("cargo:rustc-link-lib=dylib=IPSec_MB");

    for token in pkg_config(&["--libs"]).split_whitespace() {
        if let Some(dir) = token.strip_prefix("-L") {
            println!("cargo:rustc-link-search=native={dir}");
        } else if let Some(lib) = token.strip_prefix("-l") {
            println!("cargo:rustc-link-lib=dylib={lib}");
        }
    }

    let families = [
        "rte_eal_.*", "rte_lcore_.*", "rte_get_.*", "rte_socket_.*", "rte_errno", "rte_strerror",
        "rte_eth_.*", "rte_pktmbuf_.*", "rte_mbuf_.*", "rte_mempool_.*", "rte_ring_.*",
        "rte_flow_.*", "rte_dev_.*", "rte_exit", "shim_.*",
    ];
    let mut builder = bindgen::Builder::default()
        .header(manifest_dir.join("wrapper.h").to_string_lossy())
        .clang_args(&cflags)
        .clang_arg(format!("-I{}", manifest_dir.display()))
        .derive_debug(false)
        .derive_default(true)
        .layout_tests(false)
        .generate_comments(false)
        // Packed ARP/GTP structs that contain aligned ones do not compile as Rust
        // (E0588); we parse those protocols from bytes, so keep them opaque.
        .opaque_type("rte_arp_.*")
        .opaque_type("rte_l2tpv2_.*")
        .opaque_type("rte_gtp_.*")
        .default_enum_style(bindgen::EnumVariation::Consts)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()));
    for family in families {
        builder = builder.allowlist_function(family).allowlist_type(family).allowlist_var(family);
    }
    builder = builder.allowlist_var("RTE_.*").allowlist_var("SHIM_.*");
    let bindings = builder.generate().unwrap_or_else(|err| {
        panic!("\n\ndpdk-sys: bindgen failed on the DPDK headers ({err}); {INSTALL_HINT}\n\n")
    });
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("bindings.rs");
    bindings.write_to_file(out).expect("write bindings.rs");
}
