//! Generic bdev methods and the base bdevs: malloc, null, uring.

use clap::Subcommand;

use crate::params::{bare, parse_size_mb, Call, Params};

#[derive(Debug, Subcommand)]
pub enum Bdev {
    /// Show bdevs (all, or the one named).
    #[command(name = "bdev_get_bdevs")]
    GetBdevs {
        /// Name of the bdev to show.
        #[arg(short = 'b', long)]
        name: Option<String>,
        /// Milliseconds to wait for the named bdev to appear.
        #[arg(
            short = 't',
            long = "timeout-ms",
            alias = "timeout",
            value_name = "MS",
            requires = "name"
        )]
        timeout: Option<u64>,
    },
    /// Show bdev I/O statistics (all, or the one named).
    #[command(
        name = "bdev_get_iostat",
        after_help = "Not offered (ballast keeps no per-channel statistics and resets none): \
                      rpc.py's -c/--per-channel, --reset-mode."
    )]
    GetIostat {
        /// Name of the bdev to show.
        #[arg(short = 'b', long)]
        name: Option<String>,
    },
    /// Wait until every new bdev has been examined (lvol stores on it are back).
    #[command(name = "bdev_wait_for_examine")]
    WaitForExamine,
    /// Create a RAM-backed bdev; prints its name.
    #[command(
        name = "bdev_malloc_create",
        after_help = "Examples:\n  ballast-rpc bdev_malloc_create -b Malloc0 64 512\n  \
                      ballast-rpc bdev_malloc_create -b Big0 --overcommit 1048576 4096\n\n\
                      Not offered (ballast bdevs have no metadata or protection information, \
                      and I/O is never split): rpc.py's -o/--optimal-io-boundary, -m/--md-size, \
                      -i/--md-interleave, -t/--dif-type, -d/--dif-is-head-of-md, \
                      -f/--dif-pi-format."
    )]
    MallocCreate {
        /// Name of the bdev (default: chosen by the daemon, e.g. Malloc0).
        #[arg(short = 'b', long)]
        name: Option<String>,
        /// UUID of the bdev.
        #[arg(short, long)]
        uuid: Option<String>,
        /// Size in MiB (a number > 0; fractions allowed).
        #[arg(value_parser = parse_size_mb)]
        total_size: f64,
        /// Data block size in bytes.
        #[arg(value_parser = clap::value_parser!(u32).range(1..))]
        block_size: u32,
        /// Physical block size in bytes. ballast's physical block is the data block: only
        /// the data block size (or 0) is accepted.
        #[arg(short, long)]
        physical_block_size: Option<u32>,
        /// Create it even if it is larger than this machine can back in RAM (ballast's; its
        /// pages are backed as they are written, so it works until it is filled).
        #[arg(long)]
        overcommit: bool,
    },
    /// Delete a malloc bdev.
    #[command(name = "bdev_malloc_delete")]
    MallocDelete {
        /// Name of the malloc bdev.
        name: String,
    },
    /// Create a bdev that discards writes and reads zeroes; prints its name.
    #[command(
        name = "bdev_null_create",
        after_help = "Example: ballast-rpc bdev_null_create Null0 1024 4096\n\n\
                      Not offered (ballast bdevs have no metadata or protection information, \
                      and no write or unmap hints): rpc.py's -m/--md-size, -t/--dif-type, \
                      -d/--dif-is-head-of-md, -f/--dif-pi-format, \
                      -a/--preferred-write-alignment, -g/--preferred-write-granularity, \
                      -s/--optimal-write-size, -c/--preferred-unmap-alignment, \
                      -r/--preferred-unmap-granularity."
    )]
    NullCreate {
        /// Name of the bdev.
        name: String,
        /// Size in MiB.
        #[arg(value_parser = clap::value_parser!(u64).range(1..))]
        total_size: u64,
        /// Data block size in bytes.
        #[arg(value_parser = clap::value_parser!(u32).range(1..))]
        block_size: u32,
        /// UUID of the bdev.
        #[arg(short, long)]
        uuid: Option<String>,
        /// Physical block size in bytes. ballast's physical block is the data block: only
        /// the data block size (or 0) is accepted.
        #[arg(short, long)]
        physical_block_size: Option<u32>,
    },
    /// Delete a null bdev.
    #[command(name = "bdev_null_delete")]
    NullDelete {
        /// Name of the null bdev.
        name: String,
    },
    /// Create a bdev on a file or block device through io_uring; prints its name.
    #[command(
        name = "bdev_uring_create",
        after_help = "Example: ballast-rpc bdev_uring_create /dev/nvme0n1 Uring0 4096"
    )]
    UringCreate {
        /// Path to the device or file.
        filename: String,
        /// Name of the bdev.
        name: String,
        /// Block size in bytes (default: the device's logical block size).
        block_size: Option<u32>,
        /// UUID of the bdev.
        #[arg(short, long)]
        uuid: Option<String>,
    },
    /// Delete a uring bdev.
    #[command(name = "bdev_uring_delete")]
    UringDelete {
        /// Name of the uring bdev.
        name: String,
    },
}

impl Bdev {
    /// The method and params. Fails only on sizes that overflow or round to no block.
    pub fn call(&self) -> Result<Call, String> {
        use Bdev as B;
        Ok(match self {
            B::GetBdevs { name, timeout } => Params::new()
                .opt("name", name.as_deref())
                .opt("timeout", *timeout)
                .call("bdev_get_bdevs"),
            B::GetIostat { name } => Params::new()
                .opt("name", name.as_deref())
                .call("bdev_get_iostat"),
            B::WaitForExamine => bare("bdev_wait_for_examine"),
            B::MallocCreate {
                name,
                uuid,
                total_size,
                block_size,
                physical_block_size,
                overcommit,
            } => {
                // rpc.py's (total_size * 1024 * 1024) // block_size, with a float size.
                let num_blocks = (total_size * 1024.0 * 1024.0 / f64::from(*block_size)).floor();
                if num_blocks < 1.0 {
                    return Err(format!(
                        "bdev_malloc_create: {total_size} MiB is less than one \
                         {block_size}-byte block"
                    ));
                }
                if num_blocks >= u64::MAX as f64 {
                    return Err(format!("bdev_malloc_create: {total_size} MiB is too large"));
                }
                Params::new()
                    .opt("name", name.as_deref())
                    .opt("uuid", uuid.as_deref())
                    .set("num_blocks", num_blocks as u64)
                    .set("block_size", *block_size)
                    .opt("physical_block_size", *physical_block_size)
                    .flag("overcommit", *overcommit)
                    .call("bdev_malloc_create")
            }
            B::MallocDelete { name } => Params::new()
                .set("name", name.as_str())
                .call("bdev_malloc_delete"),
            B::NullCreate {
                name,
                total_size,
                block_size,
                uuid,
                physical_block_size,
            } => {
                let num_blocks = total_size
                    .checked_mul(1024 * 1024)
                    .map(|bytes| bytes / u64::from(*block_size))
                    .ok_or_else(|| format!("bdev_null_create: {total_size} MiB is too large"))?;
                Params::new()
                    .set("name", name.as_str())
                    .set("num_blocks", num_blocks)
                    .set("block_size", *block_size)
                    .opt("uuid", uuid.as_deref())
                    .opt("physical_block_size", *physical_block_size)
                    .call("bdev_null_create")
            }
            B::NullDelete { name } => Params::new()
                .set("name", name.as_str())
                .call("bdev_null_delete"),
            B::UringCreate {
                filename,
                name,
                block_size,
                uuid,
            } => Params::new()
                .set("filename", filename.as_str())
                .set("name", name.as_str())
                .opt("block_size", *block_size)
                .opt("uuid", uuid.as_deref())
                .call("bdev_uring_create"),
            B::UringDelete { name } => Params::new()
                .set("name", name.as_str())
                .call("bdev_uring_delete"),
        })
    }
}

#[cfg(test)]
pub mod tests {
    use crate::methods::tests::Case;
    use serde_json::json;

    pub fn cases() -> Vec<Case> {
        let uuid = "0e2b8e6c-3f3a-4e0f-8d8e-1c6b7f0a9b01";
        vec![
            ("bdev_get_bdevs", "bdev_get_bdevs", None),
            (
                "bdev_get_bdevs -b Malloc0",
                "bdev_get_bdevs",
                Some(json!({"name": "Malloc0"})),
            ),
            (
                "bdev_get_bdevs --name M0",
                "bdev_get_bdevs",
                Some(json!({"name": "M0"})),
            ),
            (
                "bdev_get_bdevs -b Malloc0 -t 500",
                "bdev_get_bdevs",
                Some(json!({"name": "Malloc0", "timeout": 500})),
            ),
            // rpc.py's long flag, and the one ballast-rpc had before.
            (
                "bdev_get_bdevs -b M0 --timeout-ms 20",
                "bdev_get_bdevs",
                Some(json!({"name": "M0", "timeout": 20})),
            ),
            (
                "bdev_get_bdevs -b M0 --timeout 30",
                "bdev_get_bdevs",
                Some(json!({"name": "M0", "timeout": 30})),
            ),
            ("bdev_get_iostat", "bdev_get_iostat", None),
            (
                "bdev_get_iostat -b Null0",
                "bdev_get_iostat",
                Some(json!({"name": "Null0"})),
            ),
            ("bdev_wait_for_examine", "bdev_wait_for_examine", None),
            (
                "bdev_malloc_create -b Malloc0 64 512",
                "bdev_malloc_create",
                Some(json!({"name": "Malloc0", "num_blocks": 131072, "block_size": 512})),
            ),
            (
                "bdev_malloc_create 64 4096 --uuid 0e2b8e6c-3f3a-4e0f-8d8e-1c6b7f0a9b01",
                "bdev_malloc_create",
                Some(json!({"num_blocks": 16384, "block_size": 4096, "uuid": uuid})),
            ),
            // Fractional sizes round down to whole blocks, as rpc.py's `//`.
            (
                "bdev_malloc_create 0.5 4096 -u u",
                "bdev_malloc_create",
                Some(json!({"num_blocks": 128, "block_size": 4096, "uuid": "u"})),
            ),
            (
                "bdev_malloc_create 1.0001 512",
                "bdev_malloc_create",
                Some(json!({"num_blocks": 2048, "block_size": 512})),
            ),
            (
                "bdev_malloc_create -b Big0 --overcommit 1048576 4096 -p 4096",
                "bdev_malloc_create",
                Some(
                    json!({"name": "Big0", "num_blocks": 268435456, "block_size": 4096,
                            "physical_block_size": 4096, "overcommit": true}),
                ),
            ),
            (
                "bdev_malloc_create 1 512 --physical-block-size 0",
                "bdev_malloc_create",
                Some(json!({"num_blocks": 2048, "block_size": 512, "physical_block_size": 0})),
            ),
            (
                "bdev_malloc_delete Malloc0",
                "bdev_malloc_delete",
                Some(json!({"name": "Malloc0"})),
            ),
            (
                "bdev_null_create Null0 1024 4096",
                "bdev_null_create",
                Some(json!({"name": "Null0", "num_blocks": 262144, "block_size": 4096})),
            ),
            (
                "bdev_null_create -u u-1 Null0 1 512 -p 512",
                "bdev_null_create",
                Some(
                    json!({"name": "Null0", "num_blocks": 2048, "block_size": 512,
                            "uuid": "u-1", "physical_block_size": 512}),
                ),
            ),
            (
                "bdev_null_delete Null0",
                "bdev_null_delete",
                Some(json!({"name": "Null0"})),
            ),
            (
                "bdev_uring_create /dev/nvme0n1 Uring0",
                "bdev_uring_create",
                Some(json!({"filename": "/dev/nvme0n1", "name": "Uring0"})),
            ),
            (
                "bdev_uring_create /tmp/disk.img Uring1 4096 -u u-2",
                "bdev_uring_create",
                Some(
                    json!({"filename": "/tmp/disk.img", "name": "Uring1", "block_size": 4096,
                            "uuid": "u-2"}),
                ),
            ),
            (
                "bdev_uring_delete Uring0",
                "bdev_uring_delete",
                Some(json!({"name": "Uring0"})),
            ),
        ]
    }

    pub const MALFORMED: &[&str] = &[
        "bdev_malloc_create 64",
        "bdev_malloc_create 0 512",
        "bdev_malloc_create -1 512",
        "bdev_malloc_create big 512",
        "bdev_malloc_create 64 0",
        "bdev_malloc_create 64 512 extra",
        "bdev_malloc_create 64 512 --overcommit yes",
        "bdev_malloc_create 64 512 -p",
        "bdev_malloc_create 64 512 -o 8",
        "bdev_malloc_create 64 512 -m 8",
        "bdev_null_create Null0 0 512",
        "bdev_null_create Null0 1.5 512",
        "bdev_null_create Null0 1",
        "bdev_uring_create /dev/x",
        "bdev_uring_create /dev/x U 4k",
        "bdev_malloc_delete",
        "bdev_get_bdevs -t 500",
        "bdev_get_bdevs -b Malloc0 -t soon",
        "bdev_wait_for_examine -b Malloc0",
    ];
}
