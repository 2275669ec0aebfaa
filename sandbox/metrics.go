package sandbox

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"

	"github.com/husk-runtime/husk/network/ns"
	"github.com/husk-runtime/husk/oci/runtime/cgroups"
)

// The CRI metrics (ListMetricDescriptors, ListPodSandboxMetrics: kubelet's
// PodAndContainerStatsFromCRI) are cAdvisor's container_* series, so that
// what scrapes kubelet's /metrics/cadvisor sees the same names and labels
// when the runtime, not cAdvisor, provides them. The CRI carries integers:
// the *_seconds_total series are whole seconds.

// metricLabels every series has, as cAdvisor's: the container's name in
// its pod, its id (husk's cgroup path, as cAdvisor's id), its image, its
// name (husk's container id), and its pod's namespace and name.
var metricLabels = []string{"container", "id", "image", "name", "namespace", "pod"}

type metricDesc struct {
	name, help string
	extra      []string // labels after metricLabels
	typ        runtimeapi.MetricType
}

const (
	counter = runtimeapi.MetricType_COUNTER
	gauge   = runtimeapi.MetricType_GAUGE
)

var metricDescs = []metricDesc{
	{"container_cpu_usage_seconds_total", "Cumulative CPU time consumed, in whole seconds.", []string{"cpu"}, counter},
	{"container_cpu_user_seconds_total", "Cumulative user CPU time consumed, in whole seconds.", nil, counter},
	{"container_cpu_system_seconds_total", "Cumulative system CPU time consumed, in whole seconds.", nil, counter},
	{"container_cpu_cfs_periods_total", "Number of elapsed enforcement period intervals.", nil, counter},
	{"container_cpu_cfs_throttled_periods_total", "Number of throttled period intervals.", nil, counter},
	{"container_cpu_cfs_throttled_seconds_total", "Total time duration the container has been throttled, in whole seconds.", nil, counter},
	{"container_memory_usage_bytes", "Current memory usage in bytes, including all memory regardless of when it was accessed.", nil, gauge},
	{"container_memory_working_set_bytes", "Current working set in bytes.", nil, gauge},
	{"container_memory_rss", "Size of RSS in bytes.", nil, gauge},
	{"container_memory_cache", "Number of bytes of page cache memory.", nil, gauge},
	{"container_memory_mapped_file", "Size of memory mapped files in bytes.", nil, gauge},
	{"container_memory_swap", "Container swap usage in bytes.", nil, gauge},
	{"container_memory_kernel_usage", "Size of kernel memory allocated in bytes.", nil, gauge},
	{"container_memory_max_usage_bytes", "Maximum memory usage recorded in bytes.", nil, gauge},
	{"container_memory_failcnt", "Number of memory usage hits limits.", nil, counter},
	{"container_memory_failures_total", "Cumulative count of memory allocation failures.", []string{"failure_type", "scope"}, counter},
	{"container_oom_events_total", "Count of out of memory events observed for the container.", nil, counter},
	{"container_pressure_cpu_stalled_seconds_total", "Total time duration no tasks in the container could make progress due to CPU congestion, in whole seconds.", nil, counter},
	{"container_pressure_cpu_waiting_seconds_total", "Total time duration tasks in the container have waited due to CPU congestion, in whole seconds.", nil, counter},
	{"container_pressure_memory_stalled_seconds_total", "Total time duration no tasks in the container could make progress due to memory congestion, in whole seconds.", nil, counter},
	{"container_pressure_memory_waiting_seconds_total", "Total time duration tasks in the container have waited due to memory congestion, in whole seconds.", nil, counter},
	{"container_pressure_io_stalled_seconds_total", "Total time duration no tasks in the container could make progress due to IO congestion, in whole seconds.", nil, counter},
	{"container_pressure_io_waiting_seconds_total", "Total time duration tasks in the container have waited due to IO congestion, in whole seconds.", nil, counter},
	{"container_processes", "Number of processes running inside the container.", nil, gauge},
	{"container_threads", "Number of threads running inside the container.", nil, gauge},
	{"container_threads_max", "Maximum number of threads allowed inside the container, 0 for no limit.", nil, gauge},
	{"container_file_descriptors", "Number of open file descriptors for the container.", nil, gauge},
	{"container_sockets", "Number of open sockets for the container.", nil, gauge},
	{"container_fs_usage_bytes", "Number of bytes that are consumed by the container on this filesystem.", []string{"device"}, gauge},
	{"container_fs_limit_bytes", "Number of bytes that can be consumed by the container on this filesystem.", []string{"device"}, gauge},
	{"container_fs_inodes_total", "Number of inodes of the filesystem.", []string{"device"}, gauge},
	{"container_fs_inodes_free", "Number of available inodes of the filesystem.", []string{"device"}, gauge},
	{"container_fs_reads_total", "Cumulative count of reads completed.", []string{"device"}, counter},
	{"container_fs_reads_bytes_total", "Cumulative count of bytes read.", []string{"device"}, counter},
	{"container_fs_writes_total", "Cumulative count of writes completed.", []string{"device"}, counter},
	{"container_fs_writes_bytes_total", "Cumulative count of bytes written.", []string{"device"}, counter},
	{"container_blkio_device_usage_total", "Blkio device bytes usage.", []string{"device", "major", "minor", "operation"}, counter},
	{"container_network_receive_bytes_total", "Cumulative count of bytes received.", []string{"interface"}, counter},
	{"container_network_receive_packets_total", "Cumulative count of packets received.", []string{"interface"}, counter},
	{"container_network_receive_errors_total", "Cumulative count of errors encountered while receiving.", []string{"interface"}, counter},
	{"container_network_receive_packets_dropped_total", "Cumulative count of packets dropped while receiving.", []string{"interface"}, counter},
	{"container_network_transmit_bytes_total", "Cumulative count of bytes transmitted.", []string{"interface"}, counter},
	{"container_network_transmit_packets_total", "Cumulative count of packets transmitted.", []string{"interface"}, counter},
	{"container_network_transmit_errors_total", "Cumulative count of errors encountered while transmitting.", []string{"interface"}, counter},
	{"container_network_transmit_packets_dropped_total", "Cumulative count of packets dropped while transmitting.", []string{"interface"}, counter},
	{"container_memory_total_active_file_bytes", "Current total active file in bytes.", nil, gauge},
	{"container_memory_total_inactive_file_bytes", "Current total inactive file in bytes.", nil, gauge},
	{"container_memory_file_dirty_bytes", "Size of dirty page cache memory in bytes.", nil, gauge},
	{"container_memory_file_writeback_bytes", "Size of page cache memory under writeback in bytes.", nil, gauge},
	{"container_memory_pgscan_total", "Number of pages scanned (cgroup v2).", nil, counter},
	{"container_memory_pgsteal_total", "Number of pages reclaimed (cgroup v2).", nil, counter},
	{"container_memory_workingset_refault_anon_total", "Number of refaults of previously evicted anonymous pages (cgroup v2).", nil, counter},
	{"container_memory_workingset_refault_file_total", "Number of refaults of previously evicted file pages (cgroup v2).", nil, counter},
	{"container_memory_events_high_total", "Number of times usage went over memory.high (cgroup v2).", nil, counter},
	{"container_memory_events_max_total", "Number of times usage was about to go over memory.max (cgroup v2).", nil, counter},
	{"container_ulimits_soft", "Soft ulimit values of the container's first process.", []string{"ulimit"}, gauge},
	{"container_spec_cpu_period", "CPU period of the container.", nil, gauge},
	{"container_spec_cpu_quota", "CPU quota of the container.", nil, gauge},
	{"container_spec_cpu_shares", "CPU share of the container.", nil, gauge},
	{"container_spec_memory_limit_bytes", "Memory limit for the container.", nil, gauge},
	{"container_spec_memory_swap_limit_bytes", "Memory swap limit for the container.", nil, gauge},
	{"container_spec_memory_reservation_limit_bytes", "Memory reservation limit for the container.", nil, gauge},
	{"container_creation_time_seconds", "Creation time of the container since unix epoch in seconds.", nil, gauge},
	{"container_start_time_seconds", "Start time of the container since unix epoch in seconds.", nil, gauge},
	{"container_last_seen", "Last time a container was seen by the exporter, in seconds since the epoch.", nil, gauge},
}

// MetricDescriptors are the series ListPodSandboxMetrics returns.
func MetricDescriptors() []*runtimeapi.MetricDescriptor {
	out := make([]*runtimeapi.MetricDescriptor, 0, len(metricDescs))
	for _, d := range metricDescs {
		out = append(out, &runtimeapi.MetricDescriptor{Name: d.name, Help: d.help, LabelKeys: append(append([]string{}, metricLabels...), d.extra...)})
	}
	return out
}

var metricTypes = func() map[string]runtimeapi.MetricType {
	m := map[string]runtimeapi.MetricType{}
	for _, d := range metricDescs {
		m[d.name] = d.typ
	}
	return m
}()

// series collects one target's metrics with its labels.
type series struct {
	labels []string
	out    []*runtimeapi.Metric
}

func (s *series) add(name string, v uint64, extra ...string) {
	s.out = append(s.out, &runtimeapi.Metric{
		Name: name, MetricType: metricTypes[name],
		LabelValues: append(append([]string{}, s.labels...), extra...),
		Value:       &runtimeapi.UInt64Value{Value: v},
	})
}

// PodMetrics reports the metrics of every ready pod and its running
// containers, as old as a allows. What cannot be read for one (a
// container that just ended) is left out, not an error.
func (m *Manager) PodMetrics(a Age) []*runtimeapi.PodSandboxMetrics {
	if a == Sampled {
		m.metricsResample.ask(m, m.sampleMetrics)
	}
	return m.podMetrics(a)
}

func (m *Manager) podMetrics(a Age) []*runtimeapi.PodSandboxMetrics {
	var out []*runtimeapi.PodSandboxMetrics
	containers := m.ListContainers()
	for _, p := range m.List() {
		if !p.Ready() {
			continue
		}
		pm := &runtimeapi.PodSandboxMetrics{PodSandboxId: p.ID}
		pm.Metrics, _ = m.metricsOf(p.ID, a, func() ([]*runtimeapi.Metric, error) { return m.podSeries(p) })
		for _, c := range containers {
			if c.PodID != p.ID || c.State != ContainerStarted {
				continue
			}
			cs, err := m.metricsOf(c.ID, a, func() ([]*runtimeapi.Metric, error) { return m.containerMetrics(p, c) })
			if err != nil {
				klog.V(4).InfoS("Metrics: container", "id", c.ID, "err", err)
				continue
			}
			pm.ContainerMetrics = append(pm.ContainerMetrics, &runtimeapi.ContainerMetrics{ContainerId: c.ID, Metrics: cs})
		}
		out = append(out, pm)
	}
	return out
}

// podSeries are a pod's own series: its network, as cAdvisor reports it
// for the pod's sandbox ("POD"), then its cgroup's.
func (m *Manager) podSeries(p *Pod) ([]*runtimeapi.Metric, error) {
	md := p.Config.GetMetadata()
	s := &series{labels: []string{"POD", p.CgroupPath, "", p.ID, md.GetNamespace(), md.GetName()}}
	if path := p.Namespaces[ns.Net]; path != "" {
		if err := addNetworkMetrics(s, path); err != nil {
			klog.V(4).InfoS("Metrics: pod network", "pod", p.ID, "err", err)
		}
	}
	// The network's series stand without the cgroup's.
	ms, err := m.podCgroupMetrics(p)
	if err != nil {
		klog.V(4).InfoS("Metrics: pod cgroup", "pod", p.ID, "err", err)
	}
	return append(s.out, ms...), nil
}

func (m *Manager) containerMetrics(p *Pod, c *Container) ([]*runtimeapi.Metric, error) {
	md := p.Config.GetMetadata()
	s := &series{labels: []string{c.Config.GetMetadata().GetName(), c.Cgroup, c.Config.GetImage().GetImage(), c.ID, md.GetNamespace(), md.GetName()}}
	if err := m.cgroupMetrics(s, c.Cgroup); err != nil {
		return nil, err
	}

	// The writable layer, on the filesystem of husk's root.
	upper := m.upperDir(c.ID)
	used, _ := m.layerUsage(c.ID, upper, minSampleGap)
	var sfs unix.Statfs_t
	if err := unix.Statfs(upper, &sfs); err == nil {
		dev := deviceOf(upper)
		s.add("container_fs_usage_bytes", used, dev)
		s.add("container_fs_limit_bytes", sfs.Blocks*uint64(sfs.Bsize), dev)
		s.add("container_fs_inodes_total", sfs.Files, dev)
		s.add("container_fs_inodes_free", sfs.Ffree, dev)
	}
	specMetrics(s, c.Config.GetLinux().GetResources(), c.CreatedAt, c.StartedAt)
	return s.out, nil
}

// podCgroupMetrics are the series of the pod's own cgroup, which holds
// its containers', as cAdvisor reports a pod's (container="", no image
// or name).
func (m *Manager) podCgroupMetrics(p *Pod) ([]*runtimeapi.Metric, error) {
	md := p.Config.GetMetadata()
	s := &series{labels: []string{"", p.CgroupPath, "", "", md.GetNamespace(), md.GetName()}}
	if err := m.cgroupMetrics(s, p.CgroupPath); err != nil {
		return nil, err
	}
	// kubelet's sum of the containers' resources (LinuxPodSandboxConfig).
	specMetrics(s, p.Config.GetLinux().GetResources(), p.CreatedAt, p.CreatedAt)
	return s.out, nil
}

// cgroupMetrics adds the series a cgroup's files and its processes give.
func (m *Manager) cgroupMetrics(s *series, cgroup string) error {
	st, err := m.opts.Cgroups.Stats(cgroup, cgroups.Full)
	if err != nil {
		return err
	}
	sec := uint64(time.Second)
	s.add("container_cpu_usage_seconds_total", st.CPUUsageNanos/sec, "total")
	s.add("container_cpu_user_seconds_total", st.CPUUserNanos/sec)
	s.add("container_cpu_system_seconds_total", st.CPUSystemNanos/sec)
	s.add("container_cpu_cfs_periods_total", st.CPUPeriods)
	s.add("container_cpu_cfs_throttled_periods_total", st.CPUThrottledPeriods)
	s.add("container_cpu_cfs_throttled_seconds_total", st.CPUThrottledNanos/sec)
	s.add("container_memory_usage_bytes", st.MemoryUsageBytes)
	s.add("container_memory_working_set_bytes", st.MemoryWorkingSetBytes)
	s.add("container_memory_rss", st.MemoryRSSBytes)
	s.add("container_memory_cache", st.MemoryCacheBytes)
	s.add("container_memory_mapped_file", st.MemoryMappedFileBytes)
	s.add("container_memory_swap", st.SwapUsageBytes)
	s.add("container_memory_kernel_usage", st.MemoryKernelBytes)
	s.add("container_memory_max_usage_bytes", st.MemoryMaxUsageBytes)
	s.add("container_memory_failcnt", st.MemoryFailcnt)
	s.add("container_memory_failures_total", st.PageFaults, "pgfault", "container")
	s.add("container_memory_failures_total", st.MajorPageFaults, "pgmajfault", "container")
	s.add("container_memory_total_active_file_bytes", st.MemoryActiveFileBytes)
	s.add("container_memory_total_inactive_file_bytes", st.MemoryInactiveFileBytes)
	s.add("container_memory_file_dirty_bytes", st.MemoryDirtyBytes)
	s.add("container_memory_file_writeback_bytes", st.MemoryWritebackBytes)
	s.add("container_memory_pgscan_total", st.MemoryPgscan)
	s.add("container_memory_pgsteal_total", st.MemoryPgsteal)
	s.add("container_memory_workingset_refault_anon_total", st.MemoryRefaultAnon)
	s.add("container_memory_workingset_refault_file_total", st.MemoryRefaultFile)
	s.add("container_memory_events_high_total", st.MemoryHighEvents)
	s.add("container_memory_events_max_total", st.MemoryMaxEvents)
	s.add("container_spec_memory_reservation_limit_bytes", st.MemoryReservationBytes)
	s.add("container_oom_events_total", st.OOMKills)
	// cAdvisor's names: stalled is PSI's "full", waiting its "some". Only
	// where the kernel has PSI (cgroup v2).
	for _, p := range []struct {
		name string
		p    *cgroups.Pressure
	}{{"cpu", st.CPUPressure}, {"memory", st.MemoryPressure}, {"io", st.IOPressure}} {
		if p.p != nil {
			s.add("container_pressure_"+p.name+"_stalled_seconds_total", p.p.Full.TotalNanos/sec)
			s.add("container_pressure_"+p.name+"_waiting_seconds_total", p.p.Some.TotalNanos/sec)
		}
	}
	s.add("container_threads_max", st.PidsLimit)

	pids, err := m.opts.Cgroups.Members(cgroup)
	if err != nil {
		return err
	}
	var threads, fds, sockets uint64
	for _, pid := range pids {
		threads += procThreads(pid)
		f, so := procFDs(pid)
		fds, sockets = fds+f, sockets+so
	}
	s.add("container_processes", uint64(len(pids)))
	s.add("container_threads", threads)
	s.add("container_file_descriptors", fds)
	s.add("container_sockets", sockets)
	// cAdvisor's: the limits of the cgroup's first process.
	if len(pids) > 0 {
		if n, ok := procOpenFilesLimit(pids[0]); ok {
			s.add("container_ulimits_soft", n, "max_open_files")
		}
	}
	return nil
}

// specMetrics adds the series of what was asked for: resources, and when
// the container (or pod) was created and started.
func specMetrics(s *series, r *runtimeapi.LinuxContainerResources, createdAt, startedAt int64) {
	sec := uint64(time.Second)
	s.add("container_spec_cpu_period", uint64(max(r.GetCpuPeriod(), 0)))
	s.add("container_spec_cpu_quota", uint64(max(r.GetCpuQuota(), 0)))
	s.add("container_spec_cpu_shares", uint64(max(r.GetCpuShares(), 0)))
	s.add("container_spec_memory_limit_bytes", uint64(max(r.GetMemoryLimitInBytes(), 0)))
	s.add("container_spec_memory_swap_limit_bytes", uint64(max(r.GetMemorySwapLimitInBytes(), 0)))
	s.add("container_creation_time_seconds", uint64(max(createdAt, 0))/sec)
	s.add("container_start_time_seconds", uint64(max(startedAt, 0))/sec)
	s.add("container_last_seen", uint64(time.Now().Unix()))
}

// procOpenFilesLimit reads a process's soft limit of open files; false
// if it is gone or has none.
func procOpenFilesLimit(pid int) (uint64, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		return 0, false
	}
	for line := range bytes.SplitSeq(b, []byte("\n")) {
		if v, ok := bytes.CutPrefix(line, []byte("Max open files")); ok {
			f := bytes.Fields(v)
			if len(f) == 0 {
				return 0, false
			}
			n, err := strconv.ParseUint(string(f[0]), 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}

// procThreads reads the number of threads of a process; 0 if it is gone.
func procThreads(pid int) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range bytes.SplitSeq(b, []byte("\n")) {
		if v, ok := bytes.CutPrefix(line, []byte("Threads:")); ok {
			n, _ := strconv.ParseUint(string(bytes.TrimSpace(v)), 10, 64)
			return n
		}
	}
	return 0
}

// procFDs counts a process's open descriptors, and those that are sockets.
func procFDs(pid int) (fds, sockets uint64) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, 0
	}
	for _, e := range entries {
		fds++
		if target, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && strings.HasPrefix(target, "socket:") {
			sockets++
		}
	}
	return fds, sockets
}

// deviceOf names the block device (major:minor) a path is on.
func deviceOf(path string) string {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return ""
	}
	return fmt.Sprintf("%d:%d", unix.Major(st.Dev), unix.Minor(st.Dev))
}

// addNetworkMetrics adds the interfaces of the network namespace pinned
// at path.
func addNetworkMetrics(s *series, path string) error {
	ifaces, err := podInterfaces(path)
	for _, i := range ifaces {
		s.add("container_network_receive_bytes_total", i.RxBytes, i.Name)
		s.add("container_network_receive_packets_total", i.RxPackets, i.Name)
		s.add("container_network_receive_errors_total", i.RxErrors, i.Name)
		s.add("container_network_receive_packets_dropped_total", i.RxDropped, i.Name)
		s.add("container_network_transmit_bytes_total", i.TxBytes, i.Name)
		s.add("container_network_transmit_packets_total", i.TxPackets, i.Name)
		s.add("container_network_transmit_errors_total", i.TxErrors, i.Name)
		s.add("container_network_transmit_packets_dropped_total", i.TxDropped, i.Name)
	}
	return err
}
