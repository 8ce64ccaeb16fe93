//! The stacked bdevs, compress, crypto, error (fault injection) and raid1 (mirror), and the
//! accel keys that crypto bdevs use.

use clap::Subcommand;

use crate::params::{Call, Params};

#[derive(Debug, Subcommand)]
pub enum Stages {
    /// Create a compressed bdev over a base bdev; prints its name. Opens the compressed
    /// volume the base holds, or formats the base as one.
    #[command(
        name = "bdev_compress_create",
        after_help = "Example: ballast-rpc bdev_compress_create -b Malloc0 -a zstd -L 3\n\n\
                      ballast keeps the volume's metadata on the base bdev: SPDK's pm_path is \
                      accepted and ignored."
    )]
    BdevCompressCreate {
        /// Name of the base bdev.
        #[arg(short = 'b', long)]
        base_bdev_name: String,
        /// Name of the compressed bdev (default: COMP_<base>).
        #[arg(short, long)]
        name: Option<String>,
        /// Compression algorithm: lz4 (default) or zstd.
        #[arg(short, long, alias = "comp-algo", value_parser = ["lz4", "zstd"])]
        algorithm: Option<String>,
        /// Zstd level, 1 (fastest) to 19.
        #[arg(short = 'L', long, alias = "comp-level")]
        level: Option<i32>,
        /// Chunk size in bytes: a power of two from 4096 to 131072 (default 16384).
        #[arg(long)]
        chunk_size: Option<u32>,
        /// Accepted for rpc.py compatibility and ignored by ballast.
        #[arg(short, long)]
        pm_path: Option<String>,
        /// rpc.py's logical block size: accepted and ignored (the compressed bdev has its
        /// base's block size).
        #[arg(short = 'l', long)]
        lb_size: Option<u32>,
        /// Format the base even if it holds data but no compressed volume.
        #[arg(long)]
        force: bool,
    },
    /// Delete a compressed bdev (the compressed data stays on its base).
    #[command(name = "bdev_compress_delete")]
    BdevCompressDelete {
        /// Name of the compressed bdev.
        name: String,
    },
    /// Show compressed bdevs and their space figures (all, or the one named).
    #[command(name = "bdev_compress_get_stats")]
    BdevCompressGetStats {
        /// Name of the compressed bdev.
        #[arg(short, long)]
        name: Option<String>,
    },
    /// Register an encryption key (rpc.py's flags). The key material is never printed back.
    #[command(
        name = "accel_crypto_key_create",
        after_help = "Example: ballast-rpc accel_crypto_key_create -c AES_XTS -k <64 hex> \
                      -e <64 hex> -n k0\n\n\
                      -e/--key2 is optional in rpc.py; AES_XTS, the one cipher, needs it."
    )]
    AccelCryptoKeyCreate {
        /// Cipher: AES_XTS.
        #[arg(short, long)]
        cipher: String,
        /// Key 1 in hex (32 hex digits for AES-XTS-128, 64 for AES-XTS-256).
        #[arg(short, long)]
        key: String,
        /// Key 2 (the tweak key) in hex, same length, different from key 1.
        #[arg(short = 'e', long)]
        key2: String,
        /// Key name.
        #[arg(short, long)]
        name: String,
        /// Tweak mode (only SIMPLE_LBA).
        #[arg(short, long)]
        tweak_mode: Option<String>,
    },
    /// List keys (names and ciphers, never the material).
    #[command(name = "accel_crypto_keys_get")]
    AccelCryptoKeysGet {
        /// Only this key.
        #[arg(short, long)]
        key_name: Option<String>,
    },
    /// Destroy a key (refused while a crypto bdev uses it).
    #[command(name = "accel_crypto_key_destroy")]
    AccelCryptoKeyDestroy {
        /// Key name.
        #[arg(short = 'n', long = "name", alias = "key-name", value_name = "NAME")]
        key_name: String,
    },
    /// Create an AES-XTS encrypted bdev over a base bdev; prints its name.
    #[command(
        name = "bdev_crypto_create",
        after_help = "Example: ballast-rpc bdev_crypto_create Malloc0 Crypt0 -n k0\n\n\
                      Not offered: rpc.py's -k/--key, -c/--cipher and -k2/--key2 (create the \
                      key with accel_crypto_key_create and pass its name with -n), \
                      -p/--crypto-pmd (no DPDK drivers)."
    )]
    BdevCryptoCreate {
        /// Name of the base bdev.
        base_bdev_name: String,
        /// Name of the crypto bdev.
        name: String,
        /// Name of a key made with accel_crypto_key_create.
        #[arg(short = 'n', long)]
        key_name: String,
    },
    /// Delete a crypto bdev (its ciphertext stays on the base).
    #[command(name = "bdev_crypto_delete")]
    BdevCryptoDelete {
        /// Name of the crypto bdev.
        name: String,
    },
    /// Create a fault-injection bdev EE_<base> over a base bdev (SPDK's error bdev); prints
    /// its name. I/O passes through until an injection is armed.
    #[command(name = "bdev_error_create")]
    BdevErrorCreate {
        /// Name of the base bdev.
        base_name: String,
        /// UUID of the error bdev.
        #[arg(long)]
        uuid: Option<String>,
    },
    /// Arm (or clear) an injection on an error bdev.
    #[command(
        name = "bdev_error_inject_error",
        after_help = "Example: ballast-rpc bdev_error_inject_error EE_Malloc0 write failure -n 3

                      pending holds the I/Os until `clear`, then passes them on."
    )]
    BdevErrorInjectError {
        /// Name of the error bdev.
        name: String,
        /// Operation: clear, all, read, write, flush, unmap, write_zeroes.
        io_type: String,
        /// What happens: failure, pending, corrupt_data, nomem.
        error_type: String,
        /// How many I/Os it takes (default 1).
        #[arg(short, long)]
        num: Option<u64>,
        /// Take I/Os only while this many are outstanding on a channel.
        #[arg(short, long)]
        queue_depth: Option<u64>,
        /// corrupt_data: the byte of the I/O's data to flip.
        #[arg(short = 'o', long)]
        corrupt_offset: Option<u64>,
        /// corrupt_data: the XOR applied to it (1..255).
        #[arg(short = 'v', long)]
        corrupt_value: Option<u8>,
    },
    /// Delete an error bdev (its base stays).
    #[command(name = "bdev_error_delete")]
    BdevErrorDelete {
        /// Name of the error bdev.
        name: String,
    },
    /// Create a mirror (raid1) over 2-5 children, or reassemble one from its children's
    /// superblocks.
    #[command(
        name = "bdev_raid_create",
        after_help = "Example: ballast-rpc bdev_raid_create -n Mirror0 -r raid1 -b \"Nvme0n1 Nvme1n1\"\n\n\
                      ballast keeps a superblock on every child whether or not -s is given; \
                      raid1 is the only level."
    )]
    BdevRaidCreate {
        /// Name of the mirror.
        #[arg(short, long, required = true)]
        name: String,
        /// RAID level: raid1 (or 1).
        #[arg(short, long, required = true)]
        raid_level: String,
        /// Children, whitespace-separated in quotes.
        #[arg(short, long, required = true)]
        base_bdevs: String,
        /// Strip size (raid1 has none: 0).
        #[arg(short = 'z', long)]
        strip_size_kb: Option<u32>,
        /// UUID of the mirror.
        #[arg(long)]
        uuid: Option<String>,
        /// rpc.py's superblock flag (ballast always keeps one).
        #[arg(short, long)]
        superblock: bool,
        /// ballast's: KiB of data one write-intent bit stands for (a power of two, 64 to
        /// 1048576; default 64).
        #[arg(long)]
        region_size_kb: Option<u32>,
    },
    /// List mirrors: all, online, configuring or offline.
    #[command(name = "bdev_raid_get_bdevs")]
    BdevRaidGetBdevs {
        /// Category.
        #[arg(default_value = "all")]
        category: String,
    },
    /// Re-add a faulted member (a partial rebuild when it is the member that left), or put a
    /// new bdev into an empty slot (a full rebuild); the copy runs in the background
    /// (progress in bdev_raid_get_bdevs).
    #[command(name = "bdev_raid_add_base_bdev")]
    BdevRaidAddBaseBdev {
        /// Name of the mirror.
        raid_bdev: String,
        /// The faulted member, or the new bdev.
        base_bdev: String,
    },
    /// Remove a member from its mirror: its slot is left empty and the mirror goes on
    /// without it (refused for the last in-sync member).
    #[command(name = "bdev_raid_remove_base_bdev")]
    BdevRaidRemoveBaseBdev {
        /// The member's bdev.
        name: String,
    },
    /// Rebuild settings: copy window, bandwidth cap, self-healing.
    #[command(name = "bdev_raid_set_options")]
    BdevRaidSetOptions {
        /// KiB copied per window (4 to 1048576; default 1024).
        #[arg(short = 'w', long)]
        process_window_size_kb: Option<u64>,
        /// Copy rate cap in MiB/s (0: none, the default).
        #[arg(short = 'b', long)]
        process_max_bandwidth_mb_sec: Option<u64>,
        /// ballast's: re-add a faulted child when its transport reconnects (default true).
        #[arg(long)]
        self_heal: Option<bool>,
    },
    /// Delete a mirror (its children keep their data and superblocks).
    #[command(name = "bdev_raid_delete")]
    BdevRaidDelete {
        /// Name of the mirror.
        name: String,
    },
    /// ballast's: pause a mirror's writes (held, never failed), wait for those in flight and
    /// flush every member, for a snapshot of each; resumes by itself after the timeout.
    #[command(name = "bdev_raid_quiesce")]
    BdevRaidQuiesce {
        /// Name of the mirror.
        name: String,
        /// Milliseconds until it resumes by itself (1 to 600000; default 10000).
        #[arg(short = 't', long)]
        timeout_ms: Option<u64>,
    },
    /// ballast's: end a mirror's pause (prints false if none was in force: its deadline
    /// passed, or it was never quiesced).
    #[command(name = "bdev_raid_unquiesce")]
    BdevRaidUnquiesce {
        /// Name of the mirror.
        name: String,
    },
}

impl Stages {
    pub fn call(&self) -> Call {
        use Stages as S;
        match self {
            S::BdevCompressCreate {
                base_bdev_name,
                name,
                algorithm,
                level,
                chunk_size,
                pm_path,
                lb_size: _,
                force,
            } => Params::new()
                .set("base_bdev_name", base_bdev_name.as_str())
                .opt("name", name.as_deref())
                .opt("algorithm", algorithm.as_deref())
                .opt("level", *level)
                .opt("chunk_size", *chunk_size)
                .opt("pm_path", pm_path.as_deref())
                .flag("force", *force)
                .call("bdev_compress_create"),
            S::BdevCompressDelete { name } => Params::new()
                .set("name", name.as_str())
                .call("bdev_compress_delete"),
            S::BdevCompressGetStats { name } => Params::new()
                .opt("name", name.as_deref())
                .call("bdev_compress_get_stats"),
            S::AccelCryptoKeyCreate {
                cipher,
                key,
                key2,
                name,
                tweak_mode,
            } => Params::new()
                .set("cipher", cipher.as_str())
                .set("key", key.as_str())
                .set("key2", key2.as_str())
                .set("name", name.as_str())
                .opt("tweak_mode", tweak_mode.as_deref())
                .call("accel_crypto_key_create"),
            S::AccelCryptoKeysGet { key_name } => Params::new()
                .opt("key_name", key_name.as_deref())
                .call("accel_crypto_keys_get"),
            S::AccelCryptoKeyDestroy { key_name } => Params::new()
                .set("key_name", key_name.as_str())
                .call("accel_crypto_key_destroy"),
            S::BdevCryptoCreate {
                base_bdev_name,
                name,
                key_name,
            } => Params::new()
                .set("base_bdev_name", base_bdev_name.as_str())
                .set("name", name.as_str())
                .set("key_name", key_name.as_str())
                .call("bdev_crypto_create"),
            S::BdevCryptoDelete { name } => Params::new()
                .set("name", name.as_str())
                .call("bdev_crypto_delete"),
            S::BdevErrorCreate { base_name, uuid } => Params::new()
                .set("base_name", base_name.as_str())
                .opt("uuid", uuid.as_deref())
                .call("bdev_error_create"),
            S::BdevErrorInjectError {
                name,
                io_type,
                error_type,
                num,
                queue_depth,
                corrupt_offset,
                corrupt_value,
            } => Params::new()
                .set("name", name.as_str())
                .set("io_type", io_type.as_str())
                .set("error_type", error_type.as_str())
                .opt("num", *num)
                .opt("queue_depth", *queue_depth)
                .opt("corrupt_offset", *corrupt_offset)
                .opt("corrupt_value", *corrupt_value)
                .call("bdev_error_inject_error"),
            S::BdevErrorDelete { name } => Params::new()
                .set("name", name.as_str())
                .call("bdev_error_delete"),
            S::BdevRaidCreate {
                name,
                raid_level,
                base_bdevs,
                strip_size_kb,
                uuid,
                superblock,
                region_size_kb,
            } => Params::new()
                .set("name", name.as_str())
                .set("raid_level", raid_level.as_str())
                .set(
                    "base_bdevs",
                    base_bdevs.split_whitespace().collect::<Vec<_>>(),
                )
                .opt("strip_size_kb", *strip_size_kb)
                .opt("uuid", uuid.as_deref())
                .set("superblock", *superblock)
                .opt("region_size_kb", *region_size_kb)
                .call("bdev_raid_create"),
            S::BdevRaidGetBdevs { category } => Params::new()
                .set("category", category.as_str())
                .call("bdev_raid_get_bdevs"),
            S::BdevRaidAddBaseBdev {
                raid_bdev,
                base_bdev,
            } => Params::new()
                .set("raid_bdev", raid_bdev.as_str())
                .set("base_bdev", base_bdev.as_str())
                .call("bdev_raid_add_base_bdev"),
            S::BdevRaidRemoveBaseBdev { name } => Params::new()
                .set("name", name.as_str())
                .call("bdev_raid_remove_base_bdev"),
            S::BdevRaidSetOptions {
                process_window_size_kb,
                process_max_bandwidth_mb_sec,
                self_heal,
            } => Params::new()
                .opt("process_window_size_kb", *process_window_size_kb)
                .opt(
                    "process_max_bandwidth_mb_sec",
                    *process_max_bandwidth_mb_sec,
                )
                .opt("self_heal", *self_heal)
                .call("bdev_raid_set_options"),
            S::BdevRaidDelete { name } => Params::new()
                .set("name", name.as_str())
                .call("bdev_raid_delete"),
            S::BdevRaidQuiesce { name, timeout_ms } => Params::new()
                .set("name", name.as_str())
                .opt("timeout_ms", *timeout_ms)
                .call("bdev_raid_quiesce"),
            S::BdevRaidUnquiesce { name } => Params::new()
                .set("name", name.as_str())
                .call("bdev_raid_unquiesce"),
        }
    }
}

#[cfg(test)]
pub mod tests {
    use crate::methods::tests::Case;
    use serde_json::json;

    pub fn cases() -> Vec<Case> {
        vec![
            (
                "bdev_error_create Malloc0",
                "bdev_error_create",
                Some(json!({"base_name": "Malloc0"})),
            ),
            (
                "bdev_error_inject_error EE_Malloc0 read corrupt_data -n 2 -o 8 -v 255",
                "bdev_error_inject_error",
                Some(json!({"name": "EE_Malloc0", "io_type": "read",
                            "error_type": "corrupt_data", "num": 2, "corrupt_offset": 8,
                            "corrupt_value": 255})),
            ),
            (
                // The mapping test splits on spaces: one child here (`-b "M0 M1"` in a shell).
                "bdev_raid_create -n R0 -r raid1 -b M0 -s --uuid 3e5f4c1a-0000-4000-8000-000000000001",
                "bdev_raid_create",
                Some(json!({"name": "R0", "raid_level": "raid1", "base_bdevs": ["M0"],
                            "superblock": true,
                            "uuid": "3e5f4c1a-0000-4000-8000-000000000001"})),
            ),
            (
                "bdev_raid_add_base_bdev R0 M1",
                "bdev_raid_add_base_bdev",
                Some(json!({"raid_bdev": "R0", "base_bdev": "M1"})),
            ),
            (
                "bdev_raid_delete R0",
                "bdev_raid_delete",
                Some(json!({"name": "R0"})),
            ),
            (
                "bdev_raid_quiesce R0 -t 2500",
                "bdev_raid_quiesce",
                Some(json!({"name": "R0", "timeout_ms": 2500})),
            ),
            (
                "bdev_raid_quiesce R0",
                "bdev_raid_quiesce",
                Some(json!({"name": "R0"})),
            ),
            (
                "bdev_raid_unquiesce R0",
                "bdev_raid_unquiesce",
                Some(json!({"name": "R0"})),
            ),
            (
                "bdev_raid_remove_base_bdev M1",
                "bdev_raid_remove_base_bdev",
                Some(json!({"name": "M1"})),
            ),
            (
                "bdev_raid_set_options -w 256 -b 100 --self-heal false",
                "bdev_raid_set_options",
                Some(json!({"process_window_size_kb": 256,
                            "process_max_bandwidth_mb_sec": 100, "self_heal": false})),
            ),
            (
                "bdev_raid_create -n R1 -r 1 -b M2 --region-size-kb 256",
                "bdev_raid_create",
                Some(json!({"name": "R1", "raid_level": "1", "base_bdevs": ["M2"],
                            "superblock": false, "region_size_kb": 256})),
            ),
            (
                "bdev_raid_get_bdevs",
                "bdev_raid_get_bdevs",
                Some(json!({"category": "all"})),
            ),
            (
                "bdev_error_delete EE_Malloc0",
                "bdev_error_delete",
                Some(json!({"name": "EE_Malloc0"})),
            ),
            (
                "bdev_compress_create -b Malloc0",
                "bdev_compress_create",
                Some(json!({"base_bdev_name": "Malloc0"})),
            ),
            (
                "bdev_compress_create -b Malloc0 -n Comp0 -a zstd -L 3 --chunk-size 65536 \
                 -p /mnt/pm -l 4096",
                "bdev_compress_create",
                Some(
                    json!({"base_bdev_name": "Malloc0", "name": "Comp0", "algorithm": "zstd",
                            "level": 3, "chunk_size": 65536, "pm_path": "/mnt/pm"}),
                ),
            ),
            (
                "bdev_compress_create --base-bdev-name M1 --name C1 --comp-algo lz4 \
                 --chunk-size 4096 --force",
                "bdev_compress_create",
                Some(
                    json!({"base_bdev_name": "M1", "name": "C1", "algorithm": "lz4",
                            "chunk_size": 4096, "force": true}),
                ),
            ),
            (
                "bdev_compress_delete COMP_Malloc0",
                "bdev_compress_delete",
                Some(json!({"name": "COMP_Malloc0"})),
            ),
            ("bdev_compress_get_stats", "bdev_compress_get_stats", None),
            (
                "bdev_compress_get_stats -n COMP_Malloc0",
                "bdev_compress_get_stats",
                Some(json!({"name": "COMP_Malloc0"})),
            ),
            (
                "accel_crypto_key_create -c AES_XTS -k 00ff -e ff00 -n k0",
                "accel_crypto_key_create",
                Some(json!({"cipher": "AES_XTS", "key": "00ff", "key2": "ff00", "name": "k0"})),
            ),
            (
                "accel_crypto_key_create --cipher AES_XTS --key 00ff --key2 ff00 --name k0 \
                 --tweak-mode SIMPLE_LBA",
                "accel_crypto_key_create",
                Some(
                    json!({"cipher": "AES_XTS", "key": "00ff", "key2": "ff00", "name": "k0",
                            "tweak_mode": "SIMPLE_LBA"}),
                ),
            ),
            ("accel_crypto_keys_get", "accel_crypto_keys_get", None),
            (
                "accel_crypto_keys_get -k k0",
                "accel_crypto_keys_get",
                Some(json!({"key_name": "k0"})),
            ),
            (
                "accel_crypto_key_destroy -n k0",
                "accel_crypto_key_destroy",
                Some(json!({"key_name": "k0"})),
            ),
            // rpc.py's long flag, and the one ballast-rpc had before.
            (
                "accel_crypto_key_destroy --name k1",
                "accel_crypto_key_destroy",
                Some(json!({"key_name": "k1"})),
            ),
            (
                "accel_crypto_key_destroy --key-name k2",
                "accel_crypto_key_destroy",
                Some(json!({"key_name": "k2"})),
            ),
            (
                "bdev_crypto_create Malloc0 Crypt0 -n k0",
                "bdev_crypto_create",
                Some(json!({"base_bdev_name": "Malloc0", "name": "Crypt0", "key_name": "k0"})),
            ),
            (
                "bdev_crypto_delete Crypt0",
                "bdev_crypto_delete",
                Some(json!({"name": "Crypt0"})),
            ),
        ]
    }

    pub const MALFORMED: &[&str] = &[
        "bdev_raid_quiesce",
        "bdev_raid_quiesce R0 -t soon",
        "bdev_raid_unquiesce",
        "bdev_compress_create",
        "bdev_compress_create Malloc0",
        "bdev_compress_create -b Malloc0 -a lz5",
        "bdev_compress_create -b Malloc0 -l fast",
        "bdev_compress_create -b Malloc0 -c 16k",
        "bdev_compress_delete",
        "accel_crypto_key_create -k 00ff -e ff00 -n k0",
        "accel_crypto_key_create -c AES_XTS -e ff00 -n k0",
        "accel_crypto_key_create -c AES_XTS -k 00ff -n k0",
        "accel_crypto_key_create -c AES_XTS -k 00ff -e ff00",
        "accel_crypto_key_destroy",
        "bdev_crypto_create Malloc0 Crypt0",
        "bdev_crypto_create Malloc0 -n k0",
    ];
}
