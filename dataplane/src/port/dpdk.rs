//! The DPDK edge: EAL, lcores, mempools, mbufs and ethdev ports.
//!
//! This is the only module in Sekisho that calls DPDK. Every `unsafe` block
//! wraps one FFI call and says why the call is sound; everything exported is
//! safe to use. Ownership mirrors DPDK's rules: an [`Mbuf`] frees itself on
//! drop, an [`EthPort`] stops and closes its device on drop, a [`Mempool`] is
//! freed on drop (after the ports that used it), and [`Eal`] cleans up last.
#![allow(unsafe_code)]

use super::{Batch, PacketBuf, Port, BURST};
use crate::wire::MacAddr;
use dpdk_sys as sys;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};

/// A DPDK call failed.
#[derive(Debug, thiserror::Error)]
pub enum DpdkError {
    /// EAL refused its arguments or found no usable memory.
    #[error("EAL initialisation failed: {0}")]
    EalInit(String),
    /// EAL may be initialised once per process.
    #[error("EAL is already initialised in this process")]
    EalTwice,
    /// A mempool could not be created (usually: not enough hugepage memory).
    #[error("cannot create mempool '{name}' of {size} mbufs: {reason}")]
    Mempool { name: String, size: u32, reason: String },
    /// An ethdev call failed.
    #[error("port {port} ({name}): {call} failed: {reason}")]
    Port { port: u16, name: String, call: &'static str, reason: String },
    /// A device could not be created from its devargs.
    #[error("cannot create device \"{devargs}\": {reason}")]
    Probe { devargs: String, reason: String },
    /// A worker could not be launched on an lcore.
    #[error("cannot launch a worker on lcore {lcore}: {reason}")]
    Launch { lcore: u32, reason: String },
}

fn strerror(errnum: c_int) -> String {
    // SAFETY: rte_strerror returns a pointer to a static or thread-local
    // NUL-terminated string for any error number.
    let msg = unsafe { CStr::from_ptr(sys::rte_strerror(errnum)) };
    msg.to_string_lossy().into_owned()
}

fn last_error() -> String {
    // SAFETY: reads the calling thread's rte_errno; no preconditions.
    strerror(unsafe { sys::shim_errno() })
}

static EAL_INITIALISED: AtomicBool = AtomicBool::new(false);

/// The initialised Environment Abstraction Layer. Dropping it calls
/// `rte_eal_cleanup`: drop every port and mempool first.
pub struct Eal {
    // EAL may keep pointers into argv; the strings live as long as EAL.
    _args: Vec<CString>,
}

impl Eal {
    /// Runs `rte_eal_init` with `args` (program name first). Once per process.
    pub fn init(args: &[String]) -> Result<Eal, DpdkError> {
        if EAL_INITIALISED.swap(true, Ordering::SeqCst) {
            return Err(DpdkError::EalTwice);
        }
        let args: Vec<CString> = args
            .iter()
            .map(|a| CString::new(a.as_str()).map_err(|_| DpdkError::EalInit(format!("argument {a:?} contains NUL"))))
            .collect::<Result<_, _>>()?;
        let mut argv: Vec<*mut c_char> = args.iter().map(|a| a.as_ptr() as *mut c_char).collect();
        argv.push(std::ptr::null_mut());
        // SAFETY: argv holds argc valid NUL-terminated strings followed by NULL,
        // and the strings outlive EAL (kept in `_args`). EAL permutes argv's
        // pointers but does not write through them.
        let ret = unsafe { sys::rte_eal_init(args.len() as c_int, argv.as_mut_ptr()) };
        if ret < 0 {
            EAL_INITIALISED.store(false, Ordering::SeqCst);
            return Err(DpdkError::EalInit(last_error()));
        }
        Ok(Eal { _args: args })
    }

    /// Number of lcores EAL runs (main included).
    pub fn lcore_count(&self) -> u32 {
        // SAFETY: EAL is initialised (self exists).
        unsafe { sys::rte_lcore_count() }
    }

    /// TSC ticks per second.
    pub fn tsc_hz(&self) -> u64 {
        // SAFETY: EAL is initialised, which calibrated the TSC.
        unsafe { sys::rte_get_tsc_hz() }
    }

    /// Creates a pool of `size` packet mbufs, each with `data_room` bytes.
    pub fn create_mempool(&self, name: &str, size: u32, cache: u32, data_room: u16) -> Result<Mempool, DpdkError> {
        let err = |reason: String| DpdkError::Mempool { name: name.to_owned(), size, reason };
        let cname = CString::new(name).map_err(|_| err("name contains NUL".into()))?;
        let room = data_room.checked_add(sys::RTE_PKTMBUF_HEADROOM as u16).ok_or_else(|| err("data room too large".into()))?;
        // SAFETY: EAL is initialised; the name is a valid C string (copied by DPDK).
        let pool = unsafe { sys::rte_pktmbuf_pool_create(cname.as_ptr(), size, cache, 0, room, sys::rte_socket_id() as c_int) };
        NonNull::new(pool).map(|ptr| Mempool { ptr }).ok_or_else(|| err(last_error()))
    }

    /// Creates a device after start-up from its devargs (a vdev string such as
    /// `net_tap0,iface=sk0`), as `--vdev` would have, but with an error of its own.
    pub fn probe(&self, devargs: &str) -> Result<(), DpdkError> {
        let cargs = CString::new(devargs).map_err(|_| DpdkError::Probe { devargs: devargs.to_owned(), reason: "contains NUL".into() })?;
        // SAFETY: EAL is initialised; the string is valid and copied by DPDK.
        let ret = unsafe { sys::rte_dev_probe(cargs.as_ptr()) };
        if ret != 0 {
            return Err(DpdkError::Probe { devargs: devargs.to_owned(), reason: strerror(-ret) });
        }
        Ok(())
    }

    /// The ethdev port id for a device name (`virtio_user0`, `0000:01:00.0`).
    pub fn port_by_name(&self, name: &str) -> Option<u16> {
        let cname = CString::new(name).ok()?;
        let mut port = 0u16;
        // SAFETY: valid C string in, valid u16 out-pointer.
        let ret = unsafe { sys::rte_eth_dev_get_port_by_name(cname.as_ptr(), &mut port) };
        (ret == 0).then_some(port)
    }

    /// Names of every ethdev that EAL probed, for error messages.
    pub fn port_names(&self) -> Vec<String> {
        (0..sys::RTE_MAX_ETHPORTS as u16).filter_map(port_name).collect()
    }

    /// Runs `body`, inside which `scope.launch` starts closures on worker
    /// lcores; returns only after every launched closure has returned, so the
    /// closures may borrow from the caller's stack (as `std::thread::scope`).
    pub fn scope<'env, R>(&self, body: impl FnOnce(&LcoreScope<'env>) -> R) -> R {
        let scope = LcoreScope { launched: std::cell::RefCell::new(Vec::new()), _env: PhantomData };
        let result = body(&scope);
        scope.wait_all();
        result
    }
}

impl Drop for Eal {
    fn drop(&mut self) {
        // SAFETY: every lcore has been joined (scopes wait) and every port and
        // mempool is owned by values that borrow nothing from EAL but were
        // dropped by the caller first, as documented on `Eal`.
        unsafe { sys::rte_eal_cleanup() };
    }
}

fn port_name(port: u16) -> Option<String> {
    // SAFETY: any port id may be asked; no preconditions.
    if unsafe { sys::rte_eth_dev_is_valid_port(port) } == 0 {
        return None;
    }
    let mut buf = [0 as c_char; sys::RTE_ETH_NAME_MAX_LEN as usize];
    // SAFETY: buf has RTE_ETH_NAME_MAX_LEN bytes, as the API requires.
    if unsafe { sys::rte_eth_dev_get_name_by_port(port, buf.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: on success DPDK wrote a NUL-terminated name into buf.
    Some(unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned())
}

type LaunchedFn<'env> = Box<dyn FnOnce() -> i32 + Send + 'env>;

/// Launches closures on EAL worker lcores; see [`Eal::scope`].
pub struct LcoreScope<'env> {
    launched: std::cell::RefCell<Vec<u32>>,
    _env: PhantomData<&'env mut &'env ()>,
}

unsafe extern "C" fn run_launched(arg: *mut c_void) -> c_int {
    // SAFETY: arg is the Box<LaunchedFn> leaked by `launch`, passed to exactly
    // one lcore, reclaimed here once.
    let f = unsafe { Box::from_raw(arg as *mut LaunchedFn<'static>) };
    f()
}

impl<'env> LcoreScope<'env> {
    /// Starts `f` on `lcore` (a worker lcore that EAL runs and that is idle).
    pub fn launch(&self, lcore: u32, f: impl FnOnce() -> i32 + Send + 'env) -> Result<(), DpdkError> {
        let boxed: Box<LaunchedFn<'env>> = Box::new(Box::new(f));
        let raw = Box::into_raw(boxed) as *mut c_void;
        // SAFETY: run_launched matches lcore_function_t. The closure may borrow
        // 'env data: `Eal::scope` joins every launched lcore before 'env ends.
        let ret = unsafe { sys::rte_eal_remote_launch(Some(run_launched), raw, lcore) };
        if ret != 0 {
            // SAFETY: the launch failed, so no lcore owns `raw`; reclaim it.
            drop(unsafe { Box::from_raw(raw as *mut LaunchedFn<'env>) });
            return Err(DpdkError::Launch { lcore, reason: strerror(-ret) });
        }
        self.launched.borrow_mut().push(lcore);
        Ok(())
    }

    fn wait_all(&self) {
        for lcore in self.launched.borrow_mut().drain(..) {
            // SAFETY: lcore was launched by this scope; waiting has no other precondition.
            unsafe { sys::rte_eal_wait_lcore(lcore) };
        }
    }
}

impl Drop for LcoreScope<'_> {
    fn drop(&mut self) {
        // Also joins when `body` unwinds, so no closure outlives its borrows.
        self.wait_all();
    }
}

/// A pool of packet mbufs.
pub struct Mempool {
    ptr: NonNull<sys::rte_mempool>,
}

// SAFETY: DPDK mempools are multi-producer/multi-consumer safe.
unsafe impl Send for Mempool {}
// SAFETY: as above; all operations through &Mempool are thread-safe in DPDK.
unsafe impl Sync for Mempool {}

impl Mempool {
    /// Mbufs currently allocated (in rings, in flight, or held by us).
    pub fn in_use(&self) -> u32 {
        // SAFETY: ptr is a live mempool.
        unsafe { sys::rte_mempool_in_use_count(self.ptr.as_ptr()) }
    }
    /// Mbufs free in the pool (per-lcore caches included).
    pub fn available(&self) -> u32 {
        // SAFETY: ptr is a live mempool.
        unsafe { sys::rte_mempool_avail_count(self.ptr.as_ptr()) }
    }
    /// Takes one mbuf, empty, or None when the pool is exhausted.
    pub fn alloc(&self) -> Option<Mbuf> {
        // SAFETY: ptr is a live packet mempool.
        NonNull::new(unsafe { sys::shim_pktmbuf_alloc(self.ptr.as_ptr()) }).map(Mbuf)
    }
}

impl Drop for Mempool {
    fn drop(&mut self) {
        // SAFETY: the owner dropped every port using this pool first, and every
        // Mbuf is freed back before (mbufs do not outlive the workers' scope).
        unsafe { sys::rte_mempool_free(self.ptr.as_ptr()) };
    }
}

/// One packet buffer; frees itself on drop.
pub struct Mbuf(NonNull<sys::rte_mbuf>);

// SAFETY: an mbuf is owned by exactly one Mbuf value, which may move between threads.
unsafe impl Send for Mbuf {}

impl Mbuf {
    fn into_raw(self) -> *mut sys::rte_mbuf {
        let ptr = self.0.as_ptr();
        std::mem::forget(self);
        ptr
    }
}

// The fast-path accessors read and write the mbuf's fields directly, as
// DPDK's own static-inline functions do (rte_pktmbuf_mtod, _prepend, _adj):
// a call into the C shim per access cost more than the access itself.
impl Mbuf {
    #[inline]
    fn header(&self) -> &sys::rte_mbuf {
        // SAFETY: the pointer is a live mbuf that this value owns exclusively.
        unsafe { self.0.as_ref() }
    }
    #[inline]
    fn header_mut(&mut self) -> &mut sys::rte_mbuf {
        // SAFETY: as in `header`, and &mut self gives exclusive access.
        unsafe { self.0.as_mut() }
    }
}

impl PacketBuf for Mbuf {
    #[inline]
    fn data(&self) -> &[u8] {
        let m = self.header();
        // SAFETY: the first segment holds data_len initialised bytes at
        // buf_addr + data_off (rte_pktmbuf_mtod), within the mbuf's buffer.
        unsafe { std::slice::from_raw_parts((m.buf_addr as *const u8).add(usize::from(m.data_off)), usize::from(m.data_len)) }
    }
    #[inline]
    fn data_mut(&mut self) -> &mut [u8] {
        let m = self.header_mut();
        // SAFETY: as in `data`, and &mut self gives exclusive access.
        unsafe { std::slice::from_raw_parts_mut((m.buf_addr as *mut u8).add(usize::from(m.data_off)), usize::from(m.data_len)) }
    }
    #[inline]
    fn set_len(&mut self, len: usize) -> bool {
        let m = self.header_mut();
        // Bytes past the old length are stale buffer memory (initialised), which the caller overwrites.
        match u16::try_from(len) {
            Ok(len) if m.nb_segs == 1 && usize::from(m.data_off) + usize::from(len) <= usize::from(m.buf_len) => {
                m.data_len = len;
                m.pkt_len = u32::from(len);
                true
            }
            _ => false,
        }
    }
    #[inline]
    fn prepend(&mut self, len: usize) -> bool {
        let m = self.header_mut();
        match u16::try_from(len) {
            Ok(len) if len <= m.data_off => {
                m.data_off -= len;
                m.data_len += len;
                m.pkt_len += u32::from(len);
                true
            }
            _ => false,
        }
    }
    #[inline]
    fn trim_front(&mut self, len: usize) -> bool {
        let m = self.header_mut();
        match u16::try_from(len) {
            Ok(len) if len <= m.data_len => {
                m.data_off += len;
                m.data_len -= len;
                m.pkt_len -= u32::from(len);
                true
            }
            _ => false,
        }
    }
    #[inline]
    fn is_segmented(&self) -> bool {
        self.header().nb_segs != 1
    }
}

impl Drop for Mbuf {
    fn drop(&mut self) {
        // SAFETY: we own this mbuf (and its chain); it is freed exactly once.
        unsafe { sys::shim_pktmbuf_free(self.0.as_ptr()) };
    }
}

/// Port-level counters from the device.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct PortStats {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Packets the NIC dropped because RX rings were full.
    pub rx_missed: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
    /// RX failures for lack of mbufs.
    pub rx_no_mbuf: u64,
}

/// A started ethdev port with one RX and one TX queue per worker.
pub struct EthPort {
    id: u16,
    name: String,
    queues: u16,
    mac: MacAddr,
    rss: bool,
    stopped: AtomicBool,
}

impl EthPort {
    /// Configures `port` with `queues` RX and TX queues (RSS over IP addresses
    /// and TCP/UDP ports when there are several and the device hashes),
    /// `rx_desc`/`tx_desc` descriptors each, buffers from `pool`, and starts it.
    pub fn start(_eal: &Eal, id: u16, queues: u16, rx_desc: u16, tx_desc: u16, pool: &Mempool) -> Result<EthPort, DpdkError> {
        let name = port_name(id).unwrap_or_else(|| format!("port{id}"));
        let fail = |call: &'static str, ret: c_int| DpdkError::Port { port: id, name: name.clone(), call, reason: strerror(-ret) };
        let mut info = sys::rte_eth_dev_info::default();
        // SAFETY: info is a valid out-struct; id may be any value.
        let ret = unsafe { sys::rte_eth_dev_info_get(id, &mut info) };
        if ret != 0 {
            return Err(fail("rte_eth_dev_info_get", ret));
        }
        if queues > info.max_rx_queues || queues > info.max_tx_queues {
            return Err(DpdkError::Port {
                port: id,
                name,
                call: "queue setup",
                reason: format!("{queues} queues wanted, device has {} RX and {} TX", info.max_rx_queues, info.max_tx_queues),
            });
        }
        let mut conf = sys::rte_eth_conf::default();
        // SAFETY: the shim returns a constant.
        let rss_hf = unsafe { sys::shim_rss_hf_ip_tcp_udp() } & info.flow_type_rss_offloads;
        let rss = queues > 1 && rss_hf != 0;
        if rss {
            conf.rxmode.mq_mode = sys::rte_eth_rx_mq_mode_RTE_ETH_MQ_RX_RSS;
            conf.rx_adv_conf.rss_conf.rss_hf = rss_hf;
        }
        // SAFETY: conf is a valid, fully initialised configuration.
        let ret = unsafe { sys::rte_eth_dev_configure(id, queues, queues, &conf) };
        if ret != 0 {
            return Err(fail("rte_eth_dev_configure", ret));
        }
        let (mut rx_desc, mut tx_desc) = (rx_desc, tx_desc);
        // SAFETY: valid out-pointers; the device is configured.
        let ret = unsafe { sys::rte_eth_dev_adjust_nb_rx_tx_desc(id, &mut rx_desc, &mut tx_desc) };
        if ret != 0 {
            return Err(fail("rte_eth_dev_adjust_nb_rx_tx_desc", ret));
        }
        // SAFETY: id is a valid port.
        let socket = unsafe { sys::rte_eth_dev_socket_id(id) } as u32;
        for queue in 0..queues {
            // SAFETY: null rx/tx conf selects the device defaults; pool is live
            // and outlives the port (owner drops ports first).
            let ret = unsafe { sys::rte_eth_rx_queue_setup(id, queue, rx_desc, socket, std::ptr::null(), pool.ptr.as_ptr()) };
            if ret != 0 {
                return Err(fail("rte_eth_rx_queue_setup", ret));
            }
            // SAFETY: as above.
            let ret = unsafe { sys::rte_eth_tx_queue_setup(id, queue, tx_desc, socket, std::ptr::null()) };
            if ret != 0 {
                return Err(fail("rte_eth_tx_queue_setup", ret));
            }
        }
        // SAFETY: the port is configured with all its queues.
        let ret = unsafe { sys::rte_eth_dev_start(id) };
        if ret != 0 {
            return Err(fail("rte_eth_dev_start", ret));
        }
        let mut addr = sys::rte_ether_addr::default();
        // SAFETY: valid out-struct.
        let ret = unsafe { sys::rte_eth_macaddr_get(id, &mut addr) };
        if ret != 0 {
            return Err(fail("rte_eth_macaddr_get", ret));
        }
        Ok(EthPort { id, name, queues, mac: MacAddr(addr.addr_bytes), rss, stopped: AtomicBool::new(false) })
    }

    pub fn id(&self) -> u16 {
        self.id
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn mac(&self) -> MacAddr {
        self.mac
    }
    /// True if RSS spreads received packets over the queues.
    pub fn rss(&self) -> bool {
        self.rss
    }

    /// Whether the link is up, asked without waiting.
    pub fn link_up(&self) -> bool {
        let mut link = sys::rte_eth_link::default();
        // SAFETY: valid out-struct; the port is started.
        let ret = unsafe { sys::rte_eth_link_get_nowait(self.id, &mut link) };
        ret == 0 && link.link_status() != 0
    }

    pub fn stats(&self) -> PortStats {
        let mut s = sys::rte_eth_stats::default();
        // SAFETY: valid out-struct; the port exists.
        unsafe { sys::rte_eth_stats_get(self.id, &mut s) };
        PortStats {
            rx_packets: s.ipackets,
            tx_packets: s.opackets,
            rx_bytes: s.ibytes,
            tx_bytes: s.obytes,
            rx_missed: s.imissed,
            rx_errors: s.ierrors,
            tx_errors: s.oerrors,
            rx_no_mbuf: s.rx_nombuf,
        }
    }

    /// Asks the NIC to deliver ESP (on IPv4 and IPv6) whose SPI, under
    /// `mask`, equals each rule's value to that rule's queue (rte_flow), so
    /// that every SA reaches its owner worker without a handoff. Returns the
    /// rules installed, or the driver's reason for refusing the first one
    /// (virtual devices and many NICs cannot match ESP).
    pub fn steer_esp(&self, mask: u32, rules: &[(u32, u16)]) -> Result<usize, String> {
        let ip_items = [sys::rte_flow_item_type_RTE_FLOW_ITEM_TYPE_IPV4, sys::rte_flow_item_type_RTE_FLOW_ITEM_TYPE_IPV6];
        let esp_mask = sys::rte_flow_item_esp { hdr: sys::rte_esp_hdr { spi: mask.to_be(), seq: 0 } };
        let mut attr = sys::rte_flow_attr::default();
        attr.set_ingress(1);
        let mut installed = 0;
        for &(value, queue) in rules {
            let esp_spec = sys::rte_flow_item_esp { hdr: sys::rte_esp_hdr { spi: value.to_be(), seq: 0 } };
            let queue_conf = sys::rte_flow_action_queue { index: queue };
            for ip in ip_items {
                let item = |type_, spec: *const std::ffi::c_void, mask: *const std::ffi::c_void| sys::rte_flow_item {
                    type_,
                    spec,
                    last: std::ptr::null(),
                    mask,
                };
                let none = std::ptr::null();
                let pattern = [
                    item(sys::rte_flow_item_type_RTE_FLOW_ITEM_TYPE_ETH, none, none),
                    item(ip, none, none),
                    item(sys::rte_flow_item_type_RTE_FLOW_ITEM_TYPE_ESP, (&esp_spec as *const sys::rte_flow_item_esp).cast(), (&esp_mask as *const sys::rte_flow_item_esp).cast()),
                    item(sys::rte_flow_item_type_RTE_FLOW_ITEM_TYPE_END, none, none),
                ];
                let actions = [
                    sys::rte_flow_action { type_: sys::rte_flow_action_type_RTE_FLOW_ACTION_TYPE_QUEUE, conf: (&queue_conf as *const sys::rte_flow_action_queue).cast() },
                    sys::rte_flow_action { type_: sys::rte_flow_action_type_RTE_FLOW_ACTION_TYPE_END, conf: none },
                ];
                let mut error = sys::rte_flow_error::default();
                // SAFETY: every pointer refers to a local that outlives the call;
                // the pattern and the actions end with END items; the port exists.
                let flow = unsafe { sys::rte_flow_create(self.id, &attr, pattern.as_ptr(), actions.as_ptr(), &mut error) };
                if flow.is_null() {
                    let reason = if error.message.is_null() {
                        "no reason given".to_owned()
                    } else {
                        // SAFETY: the driver set message to a NUL-terminated static string.
                        unsafe { std::ffi::CStr::from_ptr(error.message) }.to_string_lossy().into_owned()
                    };
                    return Err(reason);
                }
                installed += 1;
            }
        }
        Ok(installed)
    }

    /// The handle one worker uses for queue `queue`. Each queue must be used
    /// by one thread at a time: give every worker its own queue index.
    pub fn queue<'a>(&'a self, queue: u16, pool: &'a Mempool) -> DpdkQueue<'a> {
        assert!(queue < self.queues, "queue {queue} of {} on port {}", self.queues, self.id);
        DpdkQueue { port: self.id, queue, mac: self.mac, pool, _port: PhantomData }
    }

    /// Asks the driver to free the mbufs of packets already sent that its TX
    /// rings still hold (drivers free them lazily); returns how many it freed,
    /// or None if the driver cannot. Only while no worker uses the port.
    pub fn tx_done_cleanup(&self) -> Option<u32> {
        let mut freed = 0;
        for queue in 0..self.queues {
            // SAFETY: the port is started and no worker uses its queues (the
            // caller's contract); 0 asks to free all it can.
            let ret = unsafe { sys::rte_eth_tx_done_cleanup(self.id, queue, 0) };
            if ret < 0 {
                return None;
            }
            freed += ret as u32;
        }
        Some(freed)
    }

    /// Stops the port: the device stops receiving; queues keep their mbufs
    /// until `close`.
    pub fn stop(&self) {
        if !self.stopped.swap(true, Ordering::SeqCst) {
            // SAFETY: the port is started; no worker uses its queues any more
            // (workers borrow the port and have been joined).
            unsafe { sys::rte_eth_dev_stop(self.id) };
        }
    }
}

impl Drop for EthPort {
    fn drop(&mut self) {
        self.stop();
        let mut error = sys::rte_flow_error::default();
        // SAFETY: the port exists; flushing removes any rules steer_esp made
        // (it fails harmlessly on drivers without rte_flow).
        unsafe { sys::rte_flow_flush(self.id, &mut error) };
        // SAFETY: the port is stopped and unused; close releases its queues and their mbufs.
        unsafe { sys::rte_eth_dev_close(self.id) };
    }
}

/// One worker's RX/TX queue pair on a DPDK port.
pub struct DpdkQueue<'a> {
    port: u16,
    queue: u16,
    mac: MacAddr,
    pool: &'a Mempool,
    _port: PhantomData<&'a EthPort>,
}

impl Port for DpdkQueue<'_> {
    type Buf = Mbuf;

    fn rx_burst(&mut self, batch: &mut Batch<Mbuf>) -> usize {
        let mut raw = [std::ptr::null_mut::<sys::rte_mbuf>(); BURST];
        let room = batch.remaining_capacity() as u16;
        // SAFETY: raw has room for `room` pointers; this worker owns the queue.
        let n = unsafe { sys::shim_eth_rx_burst(self.port, self.queue, raw.as_mut_ptr(), room) };
        for &m in &raw[..usize::from(n)] {
            // rx_burst hands us n non-null mbufs, now ours.
            batch.push(Mbuf(NonNull::new(m).expect("rx_burst returned a null mbuf")));
        }
        usize::from(n)
    }

    fn tx_burst(&mut self, batch: &mut Batch<Mbuf>) -> usize {
        let mut raw = [std::ptr::null_mut::<sys::rte_mbuf>(); BURST];
        let n = batch.len();
        for (slot, m) in raw.iter_mut().zip(batch.drain(..)) {
            *slot = m.into_raw();
        }
        // SAFETY: raw[..n] are mbufs we own; the device takes ownership of the
        // first `sent`; this worker owns the queue.
        let sent = usize::from(unsafe { sys::shim_eth_tx_burst(self.port, self.queue, raw.as_mut_ptr(), n as u16) });
        for &m in &raw[sent..n] {
            // Not taken by the device: still ours, back into the batch.
            batch.push(Mbuf(NonNull::new(m).expect("mbuf pointer was non-null")));
        }
        sent
    }

    fn alloc(&mut self) -> Option<Mbuf> {
        self.pool.alloc()
    }

    fn mac(&self) -> MacAddr {
        self.mac
    }
}

/// The lcore the calling thread runs on (None for a non-EAL thread).
pub fn current_lcore() -> Option<u32> {
    // SAFETY: no preconditions.
    let id = unsafe { sys::shim_lcore_id() };
    (id < sys::RTE_MAX_LCORE).then_some(id)
}
