//go:build cluster

// A one-node Kubernetes cluster on husk, driven through kubectl and the API
// only: `make cluster-test` builds the binaries (hack/build-cluster.sh) and
// runs this; KUBE_BIN names their directory. etcd, the API server, the
// controller manager and the scheduler run as host processes on the node's
// address; kubelet registers the node and runs every pod on husk, kube-proxy
// in iptables mode, CoreDNS as a Deployment whose image, like every image
// here, comes from the test's registry through husk's mirrors.
//
// With HUSK_CLUSTER_HOLD=1 (make cluster) the cluster stays up after the
// checks until the test is interrupted, for a person to try.

package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/husk-runtime/husk/test/imagetest"
)

const (
	clusterNode    = "husk-node"
	serviceCIDR    = "10.96.0.0/16"
	clusterDNSAddr = "10.96.0.10"
	etcdClientURL  = "http://127.0.0.1:23790"
	etcdPeerURL    = "http://127.0.0.1:23800"
)

type cluster struct {
	t          *testing.T
	bin, dir   string
	addr       string // the node's own address, where the API server listens
	kubeconfig string
	d          *daemon
	net        *podNet
	kubelet    *component
	private    *imagetest.Registry // with basic auth: user "puller", password "s3cret"
}

// tmpfsIDMappable: the kernel id-maps mounts of tmpfs (Linux 6.3 on).
func tmpfsIDMappable(t *testing.T) bool {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	var major, minor int
	if _, err := fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &major, &minor); err != nil {
		t.Fatalf("kernel release %q: %v", u.Release[:], err)
	}
	return major > 6 || major == 6 && minor >= 3
}

// nodeAddress is the first global IPv4 address of the machine: the API
// server and kubelet listen there (pods reach the API server through the
// kubernetes Service, which a loopback address would not serve).
func nodeAddress(t *testing.T) string {
	out, err := exec.Command("ip", "-4", "-o", "addr", "show", "scope", "global").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) > 3 && f[2] == "inet" {
			addr, _, _ := strings.Cut(f[3], "/")
			return addr
		}
	}
	t.Fatal("the machine has no global IPv4 address for the API server")
	return ""
}

// component is a process of the cluster, restartable.
type component struct {
	bin  string
	args []string
	logf *os.File
	cmd  *exec.Cmd
}

func (p *component) start() error {
	p.cmd = exec.Command(p.bin, p.args...)
	p.cmd.Stdout, p.cmd.Stderr = p.logf, p.logf
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return p.cmd.Start()
}

// stop ends it with sig, and SIGKILL if it is not gone in 10 s.
func (p *component) stop(sig syscall.Signal) {
	_ = p.cmd.Process.Signal(sig)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
	}
}

// run starts a component with its output in dir/<name>.log; it is ended
// when the test ends, and its log's tail shown if the test failed.
func (c *cluster) run(name string, args ...string) *component {
	c.t.Helper()
	logPath := filepath.Join(c.dir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		c.t.Fatal(err)
	}
	p := &component{bin: filepath.Join(c.bin, name), args: args, logf: logf}
	if err := p.start(); err != nil {
		c.t.Fatalf("start %s: %v", name, err)
	}
	c.t.Cleanup(func() {
		p.stop(syscall.SIGTERM)
		_ = logf.Close()
		if c.t.Failed() {
			b, _ := os.ReadFile(logPath)
			lines := strings.Split(string(b), "\n")
			c.t.Logf("%s log (last 40 lines):\n%s", name, strings.Join(lines[max(0, len(lines)-40):], "\n"))
		}
	})
	return p
}

// kubectl runs kubectl as the cluster's admin; stdin, if given, is fed to it.
func (c *cluster) kubectl(stdin string, args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(c.bin, "kubectl"), append([]string{"--kubeconfig", c.kubeconfig}, args...)...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, errb.String())
	}
	return out.String(), nil
}

func (c *cluster) mustKubectl(stdin string, args ...string) string {
	c.t.Helper()
	out, err := c.kubectl(stdin, args...)
	if err != nil {
		c.t.Fatal(err)
	}
	return out
}

// eventually retries cond until it holds; an emulated guest or a first
// image pull takes its time, so the limit is generous.
func (c *cluster) eventually(what string, limit time.Duration, cond func() (bool, string)) {
	c.t.Helper()
	deadline := time.Now().Add(limit)
	for {
		ok, last := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%s: not within %s; last seen: %s", what, limit, last)
		}
		time.Sleep(time.Second)
	}
}

func startCluster(t *testing.T) *cluster {
	bin := os.Getenv("KUBE_BIN")
	if bin == "" {
		t.Fatal("KUBE_BIN must name the directory of the cluster's binaries (make cluster-test builds them)")
	}
	dir, err := os.MkdirTemp("", "husk-cluster-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		unmountUnder(dir)
		_ = os.RemoveAll(dir)
	})
	c := &cluster{t: t, bin: bin, dir: dir, addr: nodeAddress(t), kubeconfig: filepath.Join(dir, "kubeconfig", "super-admin.conf")}

	// Packets between two pods of the bridge must pass iptables, or the
	// answer of a Service's pod to another pod skips kube-proxy's DNAT.
	const brnf = "/proc/sys/net/bridge/bridge-nf-call-iptables"
	if old, err := os.ReadFile(brnf); err == nil {
		_ = os.WriteFile(brnf, []byte("1"), 0o644)
		t.Cleanup(func() { _ = os.WriteFile(brnf, old, 0o644) })
	} else {
		t.Fatalf("bridge netfilter (br_netfilter) is not loaded: %v", err)
	}

	// Images, through husk's mirrors of docker.io and registry.k8s.io.
	reg := imagetest.NewRegistry(t)
	reg.Push(t, "library/busybox:latest", imagetest.BusyboxImage(t, v1.Config{}))
	reg.Push(t, "library/busybox:gc", imagetest.BusyboxImage(t, v1.Config{Env: []string{imagetest.DefaultPath, "VERSION=gc"}}))
	reg.Push(t, "library/busybox:pinned", imagetest.BusyboxImage(t, v1.Config{Env: []string{imagetest.DefaultPath, "VERSION=pinned"}}))
	reg.Push(t, "library/busybox:v2", imagetest.BusyboxImage(t, v1.Config{Env: []string{imagetest.DefaultPath, "VERSION=2"}}))
	coredns, err := os.ReadFile(filepath.Join(bin, "coredns"))
	if err != nil {
		t.Fatal(err)
	}
	reg.Push(t, "coredns/coredns:v1.15.0", imagetest.Image(t, v1.Config{Entrypoint: []string{"/coredns"}},
		imagetest.Layer(t, imagetest.Entry{Name: "coredns", Mode: 0o755, Content: coredns})))
	c.private = imagetest.NewRegistry(t, imagetest.WithBasicAuth("puller", "s3cret", "private/"))
	c.private.Push(t, "private/busybox:v1", imagetest.BusyboxImage(t, v1.Config{Env: []string{imagetest.DefaultPath, "PRIVATE=yes"}}))
	runc, err := exec.LookPath("runc")
	if err != nil {
		t.Fatal("runc is not installed (make deps installs it)")
	}
	// kubectl in a pod, to talk to the API server with its token.
	kubectl, err := os.ReadFile(filepath.Join(bin, "kubectl"))
	if err != nil {
		t.Fatal(err)
	}
	reg.Push(t, "library/kubectl:v1", imagetest.BusyboxImage(t, v1.Config{},
		imagetest.Layer(t, imagetest.Entry{Name: "usr/", Type: tar.TypeDir}, imagetest.Entry{Name: "usr/bin/", Type: tar.TypeDir},
			imagetest.Entry{Name: "usr/bin/kubectl", Mode: 0o755, Content: kubectl})))
	// A gRPC health server, for grpc probes.
	grpcHealth := filepath.Join(t.TempDir(), "grpchealth")
	build := exec.Command("go", "build", "-o", grpcHealth, "github.com/husk-runtime/husk/test/e2e/grpchealth")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building grpchealth: %v\n%s", err, out)
	}
	grpcHealthBin, err := os.ReadFile(grpcHealth)
	if err != nil {
		t.Fatal(err)
	}
	reg.Push(t, "library/grpchealth:v1", imagetest.BusyboxImage(t, v1.Config{},
		imagetest.Layer(t, imagetest.Entry{Name: "grpchealth", Mode: 0o755, Content: grpcHealthBin})))
	c.d = newDaemon(t, "pinned_images = [\"busybox:pinned\"]\n"+fmt.Sprintf("[registry.\"docker.io\"]\nmirrors = [\"http://%s\"]\n[registry.\"registry.k8s.io\"]\nmirrors = [\"http://%s\"]\n[runtimes.runc]\npath = %q\n", reg.Host, reg.Host, runc)+insecureConfig(c.private.Host))
	c.net = newPodNet(t, c.d)
	c.net.install(t, c.d)

	// Certificates and kubeconfigs by kubeadm's phases.
	kubeadmCfg := filepath.Join(dir, "kubeadm.yaml")
	writeFile(t, kubeadmCfg, fmt.Sprintf(`apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
localAPIEndpoint:
  advertiseAddress: %[1]s
  bindPort: 6443
nodeRegistration:
  name: %[2]s
  criSocket: unix://%[3]s
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: v1.37.2
clusterName: husk
certificatesDir: %[4]s/pki
controlPlaneEndpoint: %[1]s:6443
networking:
  serviceSubnet: %[5]s
  dnsDomain: cluster.local
apiServer:
  certSANs: ["127.0.0.1", "%[1]s"]
`, c.addr, clusterNode, c.d.sock, dir, serviceCIDR))
	for _, phase := range [][]string{{"certs", "all"}, {"kubeconfig", "all", "--kubeconfig-dir", filepath.Join(dir, "kubeconfig")}} {
		args := append(append([]string{"init", "phase"}, phase...), "--config", kubeadmCfg)
		if out, err := exec.Command(filepath.Join(bin, "kubeadm"), args...).CombinedOutput(); err != nil {
			t.Fatalf("kubeadm %v: %v\n%s", args, err, out)
		}
	}
	pki := func(f string) string { return filepath.Join(dir, "pki", f) }
	kc := func(f string) string { return filepath.Join(dir, "kubeconfig", f) }

	c.run("etcd", "--name", "husk", "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", etcdClientURL, "--advertise-client-urls", etcdClientURL,
		"--listen-peer-urls", etcdPeerURL, "--initial-advertise-peer-urls", etcdPeerURL,
		"--initial-cluster", "husk="+etcdPeerURL)
	c.run("kube-apiserver", "--advertise-address", c.addr, "--bind-address", c.addr, "--secure-port", "6443",
		"--etcd-servers", etcdClientURL, "--allow-privileged",
		"--client-ca-file", pki("ca.crt"), "--tls-cert-file", pki("apiserver.crt"), "--tls-private-key-file", pki("apiserver.key"),
		"--kubelet-client-certificate", pki("apiserver-kubelet-client.crt"), "--kubelet-client-key", pki("apiserver-kubelet-client.key"),
		"--kubelet-preferred-address-types", "InternalIP",
		"--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file", pki("sa.pub"), "--service-account-signing-key-file", pki("sa.key"),
		"--service-cluster-ip-range", serviceCIDR, "--authorization-mode", "Node,RBAC", "--enable-admission-plugins", "NodeRestriction",
		"--proxy-client-cert-file", pki("front-proxy-client.crt"), "--proxy-client-key-file", pki("front-proxy-client.key"),
		"--requestheader-client-ca-file", pki("front-proxy-ca.crt"), "--requestheader-allowed-names", "front-proxy-client",
		"--requestheader-extra-headers-prefix", "X-Remote-Extra-", "--requestheader-group-headers", "X-Remote-Group",
		"--requestheader-username-headers", "X-Remote-User")
	c.eventually("the API server is ready", 3*time.Minute, func() (bool, string) {
		out, err := c.kubectl("", "get", "--raw", "/readyz")
		return err == nil && strings.TrimSpace(out) == "ok", fmt.Sprint(out, err)
	})
	// What kubeadm's later phases would bind: the API server's client
	// to kubelet's API (logs, exec, port-forward), and admin.conf's group.
	c.mustKubectl("", "create", "clusterrolebinding", "kubeadm:kubelet-api-admin", "--clusterrole", "system:kubelet-api-admin", "--user", "kube-apiserver-kubelet-client")
	c.mustKubectl("", "create", "clusterrolebinding", "kubeadm:cluster-admins", "--clusterrole", "cluster-admin", "--group", "kubeadm:cluster-admins")
	c.run("kube-controller-manager", "--kubeconfig", kc("controller-manager.conf"),
		"--authentication-kubeconfig", kc("controller-manager.conf"), "--authorization-kubeconfig", kc("controller-manager.conf"),
		"--bind-address", "127.0.0.1", "--leader-elect=false", "--client-ca-file", pki("ca.crt"),
		"--requestheader-client-ca-file", pki("front-proxy-ca.crt"), "--root-ca-file", pki("ca.crt"),
		"--service-account-private-key-file", pki("sa.key"), "--cluster-signing-cert-file", pki("ca.crt"),
		"--cluster-signing-key-file", pki("ca.key"), "--use-service-account-credentials",
		"--service-cluster-ip-range", serviceCIDR)
	c.run("kube-scheduler", "--kubeconfig", kc("scheduler.conf"),
		"--authentication-kubeconfig", kc("scheduler.conf"), "--authorization-kubeconfig", kc("scheduler.conf"),
		"--bind-address", "127.0.0.1", "--leader-elect=false")

	kubeletCfg := filepath.Join(dir, "kubelet.yaml")
	writeFile(t, kubeletCfg, fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: %s
failCgroupV1: %v
failSwapOn: false
containerRuntimeEndpoint: unix://%s
address: %s
readOnlyPort: 0
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: %s
authorization:
  mode: Webhook
clusterDNS: [%s]
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
enforceNodeAllocatable: []
# Every image garbage collection (every 5 minutes) removes every
# image no container uses and husk has not pinned, once kubelet has
# known it for a second (0 would mean 2 minutes): the imagegc
# subtest sees it.
imageGCHighThresholdPercent: 1
imageGCLowThresholdPercent: 0
imageMinimumGCAge: 1s
evictionHard:
  memory.available: "1Mi"
featureGates:
  PodAndContainerStatsFromCRI: true
`, e2eDriver(), unifiedHost, c.d.sock, c.addr, pki("ca.crt"), clusterDNSAddr))
	// After kubelet ends: what it made on the machine and leaves there.
	kubepodsBefore := cgroupExists(kubepods())
	t.Cleanup(func() {
		removeKubeletChains()
		c.d.removeAllPods() // CoreDNS's, so that their cgroups can go
		if !kubepodsBefore {
			removeCgroupTree(kubepods())
		}
	})
	// The images kubelet's garbage collection is tried on, pulled before
	// it starts: kubelet first sees an image when it starts, then every
	// 5 minutes with each collection, and collects only images it saw
	// before (imageMinimumGCAge). Seen at its start, the unused one goes
	// in the collection 5 minutes later.
	for _, img := range []string{"busybox:gc", "busybox:pinned"} {
		if _, err := c.d.images.PullImage(context.Background(), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: img}}); err != nil {
			t.Fatalf("pulling %s: %v", img, err)
		}
	}
	c.kubelet = c.run("kubelet", "--config", kubeletCfg, "--kubeconfig", kc("kubelet.conf"), "--root-dir", filepath.Join(dir, "kubelet"),
		"--hostname-override", clusterNode, "--node-ip", c.addr, "--v", "2")
	c.run("kube-proxy", "--kubeconfig", c.kubeconfig, "--proxy-mode", "iptables", "--hostname-override", clusterNode,
		"--cluster-cidr", c.net.subnet, "--healthz-bind-address", "127.0.0.1:10256", "--metrics-bind-address", "127.0.0.1:10249",
		"--conntrack-max-per-core", "0")
	t.Cleanup(func() {
		// kube-proxy leaves its chains behind when it ends.
		_ = exec.Command(filepath.Join(bin, "kube-proxy"), "--cleanup").Run()
	})
	c.eventually("the node is Ready", 3*time.Minute, c.nodeReady)
	c.mustKubectl(corednsManifest, "apply", "-f", "-")
	c.eventually("CoreDNS is Available", 3*time.Minute, func() (bool, string) {
		out, err := c.kubectl("", "-n", "kube-system", "get", "deploy", "coredns", "-o", "jsonpath={.status.availableReplicas}")
		return err == nil && out == "1", fmt.Sprint(out, err)
	})
	return c
}

// removeKubeletChains removes the iptables chains kubelet makes and leaves
// when it ends (its canary, and a firewall that drops traffic to loopback
// from anything but loopback), in both families.
func removeKubeletChains() {
	for _, tool := range []string{"iptables", "ip6tables"} {
		for _, hook := range []string{"INPUT", "OUTPUT"} {
			for exec.Command(tool, "-t", "filter", "-D", hook, "-j", "KUBE-FIREWALL").Run() == nil {
			}
		}
		for _, table := range []string{"filter", "nat", "mangle"} {
			for _, chain := range []string{"KUBE-FIREWALL", "KUBE-KUBELET-CANARY", "KUBE-IPTABLES-HINT"} {
				_ = exec.Command(tool, "-t", table, "-F", chain).Run()
				_ = exec.Command(tool, "-t", table, "-X", chain).Run()
			}
		}
	}
}

// kubepods is the cgroup kubelet puts pods under with the test's driver.
func kubepods() string {
	if e2eDriver() == "systemd" {
		return "/kubepods.slice"
	}
	return "/kubepods"
}

func cgroupExists(p string) bool {
	_, err := os.Stat(cgroupDir(p))
	return err == nil
}

// nodeReady is the node's Ready condition, for eventually.
func (c *cluster) nodeReady() (bool, string) {
	out, err := c.kubectl("", "get", "node", clusterNode, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
	return err == nil && out == "True", fmt.Sprint(out, err)
}

// CoreDNS as kubeadm deploys it, answering for the cluster's names only
// (the machine has no upstream resolver to forward to).
const corednsManifest = `apiVersion: v1
kind: ServiceAccount
metadata: {name: coredns, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:coredns"}
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns"}
subjects: [{kind: ServiceAccount, name: coredns, namespace: kube-system}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: coredns, namespace: kube-system}
data:
  Corefile: |
    .:53 {
        errors
        health
        ready
        kubernetes cluster.local in-addr.arpa ip6.arpa {
            pods insecure
            fallthrough in-addr.arpa ip6.arpa
            ttl 30
        }
        cache 30
    }
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: coredns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  replicas: 1
  selector: {matchLabels: {k8s-app: kube-dns}}
  template:
    metadata: {labels: {k8s-app: kube-dns}}
    spec:
      serviceAccountName: coredns
      dnsPolicy: Default
      containers:
      - name: coredns
        image: registry.k8s.io/coredns/coredns:v1.15.0
        args: ["-conf", "/etc/coredns/Corefile"]
        ports:
        - {containerPort: 53, name: dns, protocol: UDP}
        - {containerPort: 53, name: dns-tcp, protocol: TCP}
        readinessProbe:
          httpGet: {path: /ready, port: 8181}
          periodSeconds: 2
        livenessProbe:
          httpGet: {path: /health, port: 8080}
        volumeMounts: [{name: config, mountPath: /etc/coredns, readOnly: true}]
      volumes: [{name: config, configMap: {name: coredns}}]
---
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  clusterIP: ` + clusterDNSAddr + `
  selector: {k8s-app: kube-dns}
  ports:
  - {name: dns, port: 53, protocol: UDP}
  - {name: dns-tcp, port: 53, protocol: TCP}
`

// podsOf lists the pods of a namespace as the API has them.
type apiPod struct {
	Metadata struct {
		Name string `json:"name"`
		UID  string `json:"uid"`
	} `json:"metadata"`
	Status struct {
		Phase             string `json:"phase"`
		PodIP             string `json:"podIP"`
		ContainerStatuses []struct {
			Name         string `json:"name"`
			Image        string `json:"image"`
			ImageID      string `json:"imageID"`
			Ready        bool   `json:"ready"`
			RestartCount int    `json:"restartCount"`
			State        struct {
				Terminated *struct {
					ExitCode int    `json:"exitCode"`
					Reason   string `json:"reason"`
					Message  string `json:"message"`
				} `json:"terminated"`
			} `json:"state"`
		} `json:"containerStatuses"`
	} `json:"status"`
}

func (c *cluster) pods(ns string, args ...string) []apiPod {
	c.t.Helper()
	out := c.mustKubectl("", append([]string{"-n", ns, "get", "pods", "-o", "json"}, args...)...)
	var list struct {
		Items []apiPod `json:"items"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		c.t.Fatal(err)
	}
	return list.Items
}

// runtimePods are the ready pod sandboxes husk has, by pod UID.
func (c *cluster) runtimePods() map[string]string {
	c.t.Helper()
	resp, err := c.d.runtime.ListPodSandbox(context.Background(), &runtimeapi.ListPodSandboxRequest{
		Filter: &runtimeapi.PodSandboxFilter{State: &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY}}})
	if err != nil {
		c.t.Fatal(err)
	}
	out := map[string]string{}
	for _, p := range resp.Items {
		out[p.Metadata.Uid] = p.Metadata.Namespace + "/" + p.Metadata.Name
	}
	return out
}

// TestCluster: workloads, Services, kubectl's tools, volumes and security
// settings, each in a namespace of its own, through kubectl on a cluster
// whose node runs husk; and deleting the namespaces leaves nothing.
func TestCluster(t *testing.T) {
	c := startCluster(t)
	before := c.leaks()
	tests := []struct {
		ns  string
		run func(c *cluster, ns string)
	}{
		// First, so that kubelet's next image garbage collection
		// (every 5 minutes from its start) has the image to collect
		// by the time imagegc-collected looks.
		{"imagegc", clusterImageGC},
		{"deployment", clusterDeployment},
		{"volumes", clusterVolumes},
		{"security", clusterSecurity},
		{"workloads", clusterWorkloads},
		{"tools", clusterTools},
		{"resources", clusterResources},
		{"images", clusterImages},
		{"lifecycle", clusterLifecycle},
		// Before kubelet is restarted, which starts its 5 minutes anew.
		{"imagegc-collected", clusterImageGCCollected},
		{"restarts", clusterRestarts},
	}
	for _, tc := range tests {
		c.mustKubectl("", "create", "namespace", tc.ns)
		t.Run(tc.ns, func(t *testing.T) { tc.run(c.with(t), tc.ns) })
	}

	if os.Getenv("HUSK_CLUSTER_HOLD") == "1" {
		t.Logf("the cluster is up: KUBECONFIG=%s %s/kubectl get pods -A; crictl's config: %s; interrupt to end it",
			c.kubeconfig, c.bin, filepath.Join(c.d.dir, "crictl.yaml"))
		_ = c.d.crictlCommand(context.Background(), "version").Run() // writes its config
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
		<-sig
	}

	// Deleting the namespaces leaves nothing of their pods behind.
	for _, tc := range tests {
		c.mustKubectl("", "delete", "namespace", tc.ns, "--timeout", "3m")
	}
	c.eventually("husk has no pod of the test namespaces left", 2*time.Minute, func() (bool, string) {
		resp, err := c.d.runtime.ListPodSandbox(context.Background(), &runtimeapi.ListPodSandboxRequest{})
		if err != nil {
			return false, err.Error()
		}
		for _, p := range resp.Items {
			if p.Metadata.Namespace != "kube-system" {
				return false, fmt.Sprintf("%s/%s %v", p.Metadata.Namespace, p.Metadata.Name, p.State)
			}
		}
		return true, ""
	})
	// kubelet unmounts volumes and removes pod cgroups after the pods
	// are gone from the API: wait for it.
	c.eventually("the node is as it was before the tests' pods", 2*time.Minute, func() (bool, string) {
		after := c.leaks()
		return after == before, fmt.Sprintf("before %+v, after %+v", before, after)
	})
}

// leaks counts what pods leave on the node: husk's (countLeaks: mounts,
// veths, IP leases, pod init processes, state directories) and kubelet's
// (mounts under its root, pod cgroups). iptables rules are not counted:
// kube-proxy's follow the Services of kube-system too.
func (c *cluster) leaks() leaks {
	l := countLeaks(c.t, c.d)
	l.IPTablesRules = 0
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(mi), "\n") {
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], filepath.Join(c.dir, "kubelet")+"/") {
			l.Mounts++
		}
	}
	l.Cgroups = 0
	_ = filepath.WalkDir(cgroupDir(kubepods()), func(_ string, de os.DirEntry, err error) error {
		if err == nil && de.IsDir() {
			l.Cgroups++
		}
		return nil
	})
	return l
}

// with is the cluster as seen by a subtest (its failures are the
// subtest's).
func (c *cluster) with(t *testing.T) *cluster {
	cc := *c
	cc.t = t
	return &cc
}

// clusterDeployment: a Deployment of two replicas, its pods' image names,
// husk running exactly those pods, kubelet's stats of them, logs, exec, a
// Service by DNS, a rolling update, scaling, termination messages.
func clusterDeployment(c *cluster, ns string) {
	t := c.t
	c.mustKubectl(`apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: web
        image: busybox
        command: ["sh", "-c", "mkdir -p /www && echo hello from $(hostname) > /www/index.html && echo serving && exec httpd -f -p 8080 -h /www"]
        ports: [{containerPort: 8080}]
        readinessProbe:
          tcpSocket: {port: 8080}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
`, "-n", ns, "apply", "-f", "-")
	available := func(n string) func() (bool, string) {
		return func() (bool, string) {
			out, err := c.kubectl("", "-n", ns, "get", "deploy", "web", "-o", "jsonpath={.status.availableReplicas}/{.status.updatedReplicas}/{.status.replicas}")
			return err == nil && out == n+"/"+n+"/"+n, fmt.Sprint(out, err)
		}
	}
	c.eventually("the Deployment is Available", 3*time.Minute, available("2"))

	// The pod's status names the image as the spec does (husk reported
	// the image's id here, and kubelet showed sha256:... as the image).
	web := c.pods(ns, "-l", "app=web")
	if len(web) != 2 {
		t.Fatalf("%d web pods", len(web))
	}
	for _, p := range web {
		cs := p.Status.ContainerStatuses
		if len(cs) != 1 || cs[0].Image != "busybox" || !strings.HasPrefix(cs[0].ImageID, "docker.io/library/busybox@sha256:") {
			t.Errorf("pod %s: container statuses %+v, want image busybox and a docker.io/library/busybox digest", p.Metadata.Name, cs)
		}
	}
	// What the API knows is what husk runs.
	rt := c.runtimePods()
	for _, p := range web {
		if rt[p.Metadata.UID] != ns+"/"+p.Metadata.Name {
			t.Errorf("pod %s (%s) not among husk's ready pods %v", p.Metadata.Name, p.Metadata.UID, rt)
		}
	}

	// kubelet's stats of husk's pods, from the CRI (its cAdvisor does not
	// know husk's containers): /stats/summary and /metrics/cadvisor.
	c.eventually("kubelet's summary has the pods' stats", time.Minute, func() (bool, string) {
		out, err := c.kubectl("", "get", "--raw", "/api/v1/nodes/"+clusterNode+"/proxy/stats/summary")
		if err != nil {
			return false, err.Error()
		}
		var summary struct {
			Pods []struct {
				PodRef     struct{ Name, Namespace string }
				CPU        struct{ UsageCoreNanoSeconds uint64 }
				Memory     struct{ WorkingSetBytes uint64 }
				Network    *struct{ Interfaces []struct{ Name string } }
				Containers []struct {
					Name   string
					CPU    struct{ UsageCoreNanoSeconds uint64 }
					Memory struct{ WorkingSetBytes uint64 }
				}
			}
		}
		if err := json.Unmarshal([]byte(out), &summary); err != nil {
			return false, err.Error()
		}
		seen := 0
		for _, p := range summary.Pods {
			if p.PodRef.Namespace != ns {
				continue
			}
			if p.CPU.UsageCoreNanoSeconds == 0 || p.Memory.WorkingSetBytes == 0 || p.Network == nil || len(p.Network.Interfaces) == 0 ||
				len(p.Containers) != 1 || p.Containers[0].Name != "web" || p.Containers[0].Memory.WorkingSetBytes == 0 {
				return false, fmt.Sprintf("%+v", p)
			}
			seen++
		}
		return seen == 2, fmt.Sprintf("%d pods of %s in %s", seen, ns, out)
	})
	c.eventually("kubelet's cAdvisor metrics have the containers", time.Minute, func() (bool, string) {
		out, err := c.kubectl("", "get", "--raw", "/api/v1/nodes/"+clusterNode+"/proxy/metrics/cadvisor")
		for _, line := range strings.Split(out, "\n") {
			if strings.HasPrefix(line, "container_cpu_usage_seconds_total{") && strings.Contains(line, `container="web"`) && strings.Contains(line, `namespace="`+ns+`"`) {
				return true, ""
			}
		}
		return false, fmt.Sprint(len(out), " bytes, ", err)
	})

	// Logs and exec; the Service by its DNS name through CoreDNS and
	// kube-proxy, from another pod.
	if out := c.mustKubectl("", "-n", ns, "logs", "deploy/web"); strings.TrimSpace(out) != "serving" {
		t.Errorf("kubectl logs: %q", out)
	}
	from := web[0].Metadata.Name
	c.eventually("the Service answers by its DNS name", time.Minute, func() (bool, string) {
		out, err := c.kubectl("", "-n", ns, "exec", from, "--", "timeout", "5", "wget", "-q", "-O", "-", "http://web."+ns+".svc.cluster.local/")
		return err == nil && strings.HasPrefix(out, "hello from web-"), fmt.Sprint(out, err)
	})
	if out, err := c.kubectl("", "-n", ns, "exec", from, "--", "nslookup", "kubernetes.default.svc.cluster.local"); err != nil || !strings.Contains(out, "10.96.0.1") {
		t.Errorf("nslookup of the kubernetes Service: %q %v", out, err)
	}

	// A rolling update to another image replaces both pods, and their
	// status shows the new image.
	c.mustKubectl("", "-n", ns, "set", "image", "deploy/web", "web=busybox:v2")
	c.mustKubectl("", "-n", ns, "rollout", "status", "deploy/web", "--timeout", "3m")
	c.eventually("only the new pods are left", 2*time.Minute, func() (bool, string) {
		pods := c.pods(ns, "-l", "app=web")
		for _, p := range pods {
			if len(p.Status.ContainerStatuses) != 1 || p.Status.ContainerStatuses[0].Image != "busybox:v2" {
				return false, fmt.Sprintf("%+v", pods)
			}
		}
		return len(pods) == 2, fmt.Sprintf("%d pods", len(pods))
	})
	c.mustKubectl("", "-n", ns, "scale", "deploy/web", "--replicas", "0")
	c.eventually("scaled to 0", 2*time.Minute, func() (bool, string) {
		n := len(c.pods(ns, "-l", "app=web"))
		return n == 0, fmt.Sprintf("%d pods", n)
	})
	c.mustKubectl("", "-n", ns, "scale", "deploy/web", "--replicas", "2")
	c.eventually("scaled back to 2", 3*time.Minute, available("2"))

	// Termination messages: from the file, and from the log's last line
	// (which the container did not end with a newline).
	c.mustKubectl(`apiVersion: v1
kind: Pod
metadata: {name: message-file}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "printf DONE > /dev/termination-log; exit 3"]
---
apiVersion: v1
kind: Pod
metadata: {name: message-log}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: busybox
    terminationMessagePolicy: FallbackToLogsOnError
    command: ["sh", "-c", "echo first; printf DONE; exit 3"]
`, "-n", ns, "apply", "-f", "-")
	for _, name := range []string{"message-file", "message-log"} {
		want := "DONE"
		if name == "message-log" {
			want = "first\nDONE"
		}
		c.eventually("the termination message of "+name, 2*time.Minute, func() (bool, string) {
			pods := c.pods(ns, "--field-selector", "metadata.name="+name)
			if len(pods) != 1 || len(pods[0].Status.ContainerStatuses) != 1 || pods[0].Status.ContainerStatuses[0].State.Terminated == nil {
				return false, fmt.Sprintf("%+v", pods)
			}
			term := pods[0].Status.ContainerStatuses[0].State.Terminated
			if term.ExitCode != 3 || term.Reason != "Error" || term.Message != want {
				t.Errorf("%s: terminated %+v, want exit 3, Error and message %q", name, term, want)
			}
			return true, ""
		})
	}
}

// finished waits for a pod to end (Succeeded or Failed) and returns its
// phase and the logs of all its containers.
func (c *cluster) finished(ns, name string) (string, string) {
	c.t.Helper()
	var phase string
	c.eventually("pod "+name+" ends", 3*time.Minute, func() (bool, string) {
		out, err := c.kubectl("", "-n", ns, "get", "pod", name, "-o", "jsonpath={.status.phase}")
		phase = out
		return err == nil && (out == "Succeeded" || out == "Failed"), fmt.Sprint(out, err)
	})
	logs, _ := c.kubectl("", "-n", ns, "logs", name, "--all-containers")
	return phase, logs
}

// selfChecking runs a pod whose script checks what it sees (set -e: the
// first failed check ends it, and set -x shows which in its log) and
// prints ok at the end.
func (c *cluster) selfChecking(ns, manifest, name string) {
	c.t.Helper()
	c.mustKubectl(manifest, "-n", ns, "apply", "-f", "-")
	if phase, logs := c.finished(ns, name); phase != "Succeeded" || !strings.Contains(logs, "\nok\n") && !strings.HasPrefix(logs, "ok\n") {
		desc, _ := c.kubectl("", "-n", ns, "describe", "pod", name)
		c.t.Errorf("pod %s: %s, log:\n%s\n%s", name, phase, logs, desc)
	}
}

// clusterVolumes: ConfigMap, Secret, downward API (files and env),
// emptyDir on disk and in memory, hostPath, subPath, a read-only mount,
// fsGroup, the service account's token; and a ConfigMap's update reaching
// a running pod.
func clusterVolumes(c *cluster, ns string) {
	hostDir := filepath.Join(c.dir, "hostpath")
	if err := os.MkdirAll(hostDir, 0o755); err != nil {
		c.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(hostDir, "hello"), []byte("from-host"), 0o644); err != nil {
		c.t.Fatal(err)
	}
	c.mustKubectl(`apiVersion: v1
kind: ConfigMap
metadata: {name: cm}
data: {key: value}
---
apiVersion: v1
kind: Secret
metadata: {name: secret}
stringData: {pw: s3cret}
`, "-n", ns, "apply", "-f", "-")
	c.selfChecking(ns, `apiVersion: v1
kind: Pod
metadata: {name: volumes, labels: {app: vol}}
spec:
  restartPolicy: Never
  securityContext: {runAsUser: 1000, runAsGroup: 1000, fsGroup: 2000}
  containers:
  - name: c
    image: busybox
    env:
    - name: MY_NAME
      valueFrom: {fieldRef: {fieldPath: metadata.name}}
    - name: FROM_CM
      valueFrom: {configMapKeyRef: {name: cm, key: key}}
    command:
    - sh
    - -exc
    - |
      test "$(cat /cm/key)" = value
      test "$(cat /secret/pw)" = s3cret
      test "$FROM_CM" = value
      test "$MY_NAME" = volumes
      test "$(cat /downward/name)" = volumes
      grep -q 'app="vol"' /downward/labels
      touch /empty/f
      grep -q ' /mem tmpfs ' /proc/mounts
      touch /mem/f
      test "$(cat /host/hello)" = from-host
      test "$(cat /etc/sub/file)" = value
      if touch /ro/x; then false; fi
      test "$(stat -c %g /empty)" = 2000
      id -G | grep -qw 2000
      test -s /var/run/secrets/kubernetes.io/serviceaccount/token
      test -s /var/run/secrets/kubernetes.io/serviceaccount/ca.crt
      echo ok
    volumeMounts:
    - {name: cm, mountPath: /cm}
    - {name: secret, mountPath: /secret}
    - {name: downward, mountPath: /downward}
    - {name: empty, mountPath: /empty}
    - {name: mem, mountPath: /mem}
    - {name: host, mountPath: /host}
    - {name: cm, mountPath: /etc/sub/file, subPath: key}
    - {name: empty, mountPath: /ro, readOnly: true}
  volumes:
  - {name: cm, configMap: {name: cm}}
  - {name: secret, secret: {secretName: secret}}
  - name: downward
    downwardAPI:
      items:
      - {path: name, fieldRef: {fieldPath: metadata.name}}
      - {path: labels, fieldRef: {fieldPath: metadata.labels}}
  - {name: empty, emptyDir: {}}
  - {name: mem, emptyDir: {medium: Memory, sizeLimit: 16Mi}}
  - {name: host, hostPath: {path: `+hostDir+`, type: Directory}}
`, "volumes")

	// An update of the ConfigMap reaches a running pod's files.
	c.mustKubectl(`apiVersion: v1
kind: Pod
metadata: {name: watcher}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "while true; do cat /cm/key; echo; sleep 1; done"]
    volumeMounts: [{name: cm, mountPath: /cm}]
  volumes: [{name: cm, configMap: {name: cm}}]
`, "-n", ns, "apply", "-f", "-")
	c.eventually("the watcher runs", 2*time.Minute, func() (bool, string) {
		out, err := c.kubectl("", "-n", ns, "logs", "watcher")
		return err == nil && strings.Contains(out, "value"), fmt.Sprint(out, err)
	})
	c.mustKubectl("", "-n", ns, "patch", "configmap", "cm", "-p", `{"data":{"key":"updated"}}`)
	c.eventually("the ConfigMap's update reaches the pod", 2*time.Minute, func() (bool, string) {
		out, err := c.kubectl("", "-n", ns, "logs", "watcher", "--tail", "1")
		return err == nil && strings.TrimSpace(out) == "updated", fmt.Sprint(out, err)
	})
}

// hostCaps is the bounding set of this process, as /proc shows it: all a
// privileged container can have (root here may lack some).
func hostCaps(t *testing.T) string {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapBnd:"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatal("no CapBnd in /proc/self/status")
	return ""
}

// clusterSecurity: a pod's and a container's security settings reach
// the process.
func clusterSecurity(c *cluster, ns string) {
	c.selfChecking(ns, `apiVersion: v1
kind: Pod
metadata: {name: restricted}
spec:
  restartPolicy: Never
  securityContext:
    runAsUser: 1000
    runAsGroup: 3000
    runAsNonRoot: true
    seccompProfile: {type: RuntimeDefault}
    sysctls: [{name: net.ipv4.ip_local_port_range, value: "20000 30000"}]
  containers:
  - name: c
    image: busybox
    securityContext:
      readOnlyRootFilesystem: true
      allowPrivilegeEscalation: false
      capabilities: {drop: [ALL], add: [NET_BIND_SERVICE]}
    command:
    - sh
    - -exc
    - |
      test "$(id -u)" = 1000
      test "$(id -g)" = 3000
      if touch /x; then false; fi
      grep -q '^CapBnd:.0000000000000400$' /proc/self/status
      grep -q '^CapEff:.0000000000000000$' /proc/self/status
      grep -q '^NoNewPrivs:.1$' /proc/self/status
      grep -q '^Seccomp:.2$' /proc/self/status
      test "$(cat /proc/sys/net/ipv4/ip_local_port_range)" = "20000	30000"
      echo ok
---
apiVersion: v1
kind: Pod
metadata: {name: userns}
spec:
  restartPolicy: Never
  hostUsers: false
  # The token's volume is a tmpfs: see userns-token.
  automountServiceAccountToken: false
  containers:
  - name: c
    image: busybox
    command:
    - sh
    - -exc
    - |
      test "$(id -u)" = 0
      set -- $(head -1 /proc/self/uid_map)
      test "$1" = 0
      test "$2" != 0
      echo ok
---
apiVersion: v1
kind: Pod
metadata: {name: userns-token}
spec:
  restartPolicy: Never
  hostUsers: false
  containers:
  - name: c
    image: busybox
    command: ["sh", "-exc", "test -s /var/run/secrets/kubernetes.io/serviceaccount/token; echo ok"]
---
apiVersion: v1
kind: Pod
metadata: {name: privileged}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: busybox
    securityContext: {privileged: true}
    env: [{name: HOST_CAPS, value: "`+hostCaps(c.t)+`"}]
    command:
    - sh
    - -exc
    - |
      grep -q "^CapEff:.$HOST_CAPS\$" /proc/self/status
      test -c /dev/kmsg
      echo ok
`, "restricted")
	for _, name := range []string{"userns", "privileged"} {
		if phase, logs := c.finished(ns, name); phase != "Succeeded" || !strings.Contains(logs, "ok\n") {
			desc, _ := c.kubectl("", "-n", ns, "describe", "pod", name)
			c.t.Errorf("pod %s: %s, log:\n%s\n%s", name, phase, logs, desc)
		}
	}
	// Kubernetes' projected token, secrets and in-memory emptyDirs are
	// tmpfs, which the kernel id-maps from Linux 6.3 only (Debian 12 has
	// 6.1): before that, the container fails to be created, and says why.
	if tmpfsIDMappable(c.t) {
		if phase, logs := c.finished(ns, "userns-token"); phase != "Succeeded" || !strings.HasSuffix(logs, "\nok\n") {
			desc, _ := c.kubectl("", "-n", ns, "describe", "pod", "userns-token")
			c.t.Errorf("pod userns-token: %s, log:\n%s\n%s", phase, logs, desc)
		}
	} else {
		c.eventually("userns-token says why it cannot be created", 3*time.Minute, func() (bool, string) {
			out, err := c.kubectl("", "-n", ns, "get", "pod", "userns-token", "-o",
				"jsonpath={.status.containerStatuses[0].state.waiting.reason}: {.status.containerStatuses[0].state.waiting.message}")
			return err == nil && strings.HasPrefix(out, "CreateContainerError: ") && strings.Contains(out, "cannot be id-mapped on this kernel"), fmt.Sprint(out, err)
		})
	}
	// A RuntimeClass whose handler is husk's runc.
	c.mustKubectl(`apiVersion: node.k8s.io/v1
kind: RuntimeClass
metadata: {name: runc}
handler: runc
`, "apply", "-f", "-")
	c.t.Cleanup(func() { _, _ = c.kubectl("", "delete", "runtimeclass", "runc") })
	c.selfChecking(ns, `apiVersion: v1
kind: Pod
metadata: {name: runc}
spec:
  restartPolicy: Never
  runtimeClassName: runc
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "echo ok"]
`, "runc")
	pods, err := c.d.runtime.ListPodSandbox(context.Background(), &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		c.t.Fatal(err)
	}
	seen := false
	for _, p := range pods.Items {
		if p.Metadata.Name == "runc" && p.Metadata.Namespace == ns {
			seen = true
			if p.RuntimeHandler != "runc" {
				c.t.Errorf("the RuntimeClass's pod runs with handler %q", p.RuntimeHandler)
			}
		}
	}
	if !seen {
		c.t.Error("husk has no pod of the RuntimeClass")
	}
}

// clusterWorkloads: probes and restarts (logs --previous), init containers
// in order and a sidecar, lifecycle hooks, Jobs that complete and fail.
func clusterWorkloads(c *cluster, ns string) {
	c.mustKubectl(`apiVersion: v1
kind: Pod
metadata: {name: flaky}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "echo run at $(date +%s%N); touch /tmp/alive; sleep 3; rm /tmp/alive; sleep 300"]
    livenessProbe:
      exec: {command: ["test", "-f", "/tmp/alive"]}
      periodSeconds: 1
      timeoutSeconds: 10
      failureThreshold: 1
---
apiVersion: v1
kind: Pod
metadata: {name: grpc}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: up
    image: grpchealth:v1
    command: ["/grpchealth", "-listen", ":9090"]
    readinessProbe:
      grpc: {port: 9090}
      periodSeconds: 1
    # A server that is up is never restarted: the probe waits for it to
    # listen (an emulated guest took over a second, and one failure
    # restarted it).
    startupProbe:
      grpc: {port: 9090}
      periodSeconds: 1
      failureThreshold: 60
    livenessProbe:
      grpc: {port: 9090, service: up}
      periodSeconds: 1
      failureThreshold: 1
  - name: down
    image: grpchealth:v1
    command: ["/grpchealth", "-listen", ":9091"]
    livenessProbe:
      grpc: {port: 9091, service: down}
      periodSeconds: 1
      failureThreshold: 1
---
apiVersion: v1
kind: Pod
metadata: {name: ordered}
spec:
  restartPolicy: Never
  initContainers:
  - name: first
    image: busybox
    command: ["sh", "-c", "echo 1 >> /work/order"]
    volumeMounts: [{name: work, mountPath: /work}]
  - name: sidecar
    image: busybox
    restartPolicy: Always
    command: ["sh", "-c", "echo sidecar >> /work/order; exec sleep 300"]
    volumeMounts: [{name: work, mountPath: /work}]
  - name: second
    image: busybox
    command: ["sh", "-c", "echo 2 >> /work/order"]
    volumeMounts: [{name: work, mountPath: /work}]
  containers:
  - name: main
    image: busybox
    # The hook runs beside the container's process, not before it.
    command: ["sh", "-c", "cat /work/order; while [ ! -s /work/poststart ]; do sleep 0.1; done; cat /work/poststart"]
    lifecycle:
      postStart:
        exec: {command: ["sh", "-c", "echo hooked > /work/poststart"]}
    volumeMounts: [{name: work, mountPath: /work}]
  volumes: [{name: work, emptyDir: {}}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: done}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: c, image: busybox, command: ["sh", "-c", "echo job ran"]}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: failing}
spec:
  backoffLimit: 1
  template:
    spec:
      restartPolicy: Never
      containers: [{name: c, image: busybox, command: ["sh", "-c", "exit 4"]}]
`, "-n", ns, "apply", "-f", "-")

	// A failing liveness probe restarts the container; the previous
	// run's log stays readable.
	c.eventually("the flaky container is restarted", 2*time.Minute, func() (bool, string) {
		pods := c.pods(ns, "--field-selector", "metadata.name=flaky")
		if len(pods) != 1 || len(pods[0].Status.ContainerStatuses) != 1 {
			return false, fmt.Sprintf("%+v", pods)
		}
		return pods[0].Status.ContainerStatuses[0].RestartCount >= 1, fmt.Sprintf("%+v", pods[0].Status.ContainerStatuses)
	})
	prev, err := c.kubectl("", "-n", ns, "logs", "flaky", "--previous")
	cur, err2 := c.kubectl("", "-n", ns, "logs", "flaky")
	if err != nil || err2 != nil || !strings.HasPrefix(prev, "run at ") || !strings.HasPrefix(cur, "run at ") || prev == cur {
		c.t.Errorf("logs --previous %q (%v), logs %q (%v)", prev, err, cur, err2)
	}

	// grpc probes: the serving container becomes ready and stays up, the
	// one whose service is not serving is restarted.
	c.eventually("the grpc probes", 2*time.Minute, func() (bool, string) {
		pods := c.pods(ns, "--field-selector", "metadata.name=grpc")
		if len(pods) != 1 || len(pods[0].Status.ContainerStatuses) != 2 {
			return false, fmt.Sprintf("%+v", pods)
		}
		restarts := map[string]int{}
		ready := false
		for _, cs := range pods[0].Status.ContainerStatuses {
			restarts[cs.Name] = cs.RestartCount
			if cs.Name == "up" {
				ready = cs.Ready
			}
		}
		return ready && restarts["up"] == 0 && restarts["down"] >= 1, fmt.Sprintf("%+v", pods[0].Status.ContainerStatuses)
	})

	// Init containers in order, the sidecar started between them and
	// stopped once the main container ended, the postStart hook run.
	if phase, logs := c.finished(ns, "ordered"); phase != "Succeeded" {
		c.t.Errorf("ordered: %s\n%s", phase, logs)
	}
	if out, err := c.kubectl("", "-n", ns, "logs", "ordered", "-c", "main"); err != nil || out != "1\nsidecar\n2\nhooked\n" {
		c.t.Errorf("the order the init containers and the sidecar ran in, and the hook: %q %v", out, err)
	}

	c.eventually("the Job completes", 2*time.Minute, func() (bool, string) {
		out, err := c.kubectl("", "-n", ns, "get", "job", "done", "-o", `jsonpath={.status.conditions[?(@.type=="Complete")].status}`)
		return err == nil && out == "True", fmt.Sprint(out, err)
	})
	c.eventually("the failing Job fails after its retry", 3*time.Minute, func() (bool, string) {
		out, err := c.kubectl("", "-n", ns, "get", "job", "failing", "-o", `jsonpath={.status.conditions[?(@.type=="Failed")].status}/{.status.failed}`)
		return err == nil && out == "True/2", fmt.Sprint(out, err)
	})
}

// clusterTools: kubectl port-forward, cp both ways, exec with stdin,
// attach, debug with an ephemeral container that sees the target's
// processes; a NodePort from the host and a headless Service by DNS.
func clusterTools(c *cluster, ns string) {
	c.mustKubectl(`apiVersion: v1
kind: Pod
metadata: {name: tool, labels: {app: tool}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: tool
    image: busybox
    command: ["sh", "-c", "mkdir -p /www && echo through-the-node > /www/index.html && exec httpd -f -p 8080 -h /www"]
    readinessProbe:
      httpGet: {path: /, port: 8080}
      periodSeconds: 1
---
apiVersion: v1
kind: Pod
metadata: {name: talker}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: talker
    image: busybox
    command: ["sh", "-c", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.5; done"]
---
apiVersion: v1
kind: Service
metadata: {name: tool-nodeport}
spec:
  type: NodePort
  selector: {app: tool}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: tool-headless}
spec:
  clusterIP: None
  selector: {app: tool}
  ports: [{port: 8080}]
`, "-n", ns, "apply", "-f", "-")
	c.mustKubectl("", "-n", ns, "wait", "--for=condition=Ready", "pod/tool", "pod/talker", "--timeout=2m")
	tool := c.pods(ns, "--field-selector", "metadata.name=tool")[0]

	// port-forward
	pf := exec.Command(filepath.Join(c.bin, "kubectl"), "--kubeconfig", c.kubeconfig, "-n", ns, "port-forward", "pod/tool", "18081:8080")
	if err := pf.Start(); err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { _ = pf.Process.Kill(); _ = pf.Wait() })
	c.eventually("port-forward answers", time.Minute, func() (bool, string) {
		out, err := exec.Command("busybox", "wget", "-q", "-O", "-", "http://127.0.0.1:18081/").Output()
		return err == nil && string(out) == "through-the-node\n", fmt.Sprint(string(out), err)
	})

	// cp both ways
	local := filepath.Join(c.t.TempDir(), "payload")
	if err := os.WriteFile(local, []byte("copied in and out\n"), 0o644); err != nil {
		c.t.Fatal(err)
	}
	c.mustKubectl("", "-n", ns, "cp", local, "tool:/tmp/payload")
	back := filepath.Join(c.t.TempDir(), "back")
	c.mustKubectl("", "-n", ns, "cp", "tool:/tmp/payload", back)
	if b, err := os.ReadFile(back); err != nil || string(b) != "copied in and out\n" {
		c.t.Errorf("kubectl cp out: %q %v", b, err)
	}

	// exec with stdin
	if out, err := c.kubectl("from stdin\n", "-n", ns, "exec", "-i", "tool", "--", "cat"); err != nil || out != "from stdin\n" {
		c.t.Errorf("exec -i: %q %v", out, err)
	}

	// exec -it: the command runs on a terminal of kubectl's size.
	it := exec.Command(filepath.Join(c.bin, "kubectl"), "--kubeconfig", c.kubeconfig, "-n", ns, "exec", "-it", "tool", "--", "sh", "-c", "stty size; tty; read line; echo got $line")
	if out, err := onTerminal(c.t, it, 33, 101, "typed\r"); err != nil || !strings.Contains(out, "33 101") || !strings.Contains(out, "/dev/pts/") || !strings.Contains(out, "got typed") {
		c.t.Errorf("exec -it on a 33x101 terminal: %q %v", out, err)
	}

	// attach: the output of a running container
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	att := exec.CommandContext(ctx, filepath.Join(c.bin, "kubectl"), "--kubeconfig", c.kubeconfig, "-n", ns, "attach", "talker")
	out, _ := att.Output()
	cancel()
	if !strings.Contains(string(out), "tick ") {
		c.t.Errorf("kubectl attach printed %q", out)
	}

	// debug: an ephemeral container in the target's PID namespace
	c.mustKubectl("", "-n", ns, "debug", "tool", "--image=busybox", "--target=tool", "-c", "dbg", "--", "sh", "-c", "ps; sleep 300")
	c.eventually("the ephemeral container sees the target's processes", 2*time.Minute, func() (bool, string) {
		out, err := c.kubectl("", "-n", ns, "logs", "tool", "-c", "dbg")
		return err == nil && strings.Contains(out, "httpd -f -p 8080"), fmt.Sprint(out, err)
	})

	// A NodePort from the host, and the headless Service's name resolving
	// to the pod's address.
	port := strings.TrimSpace(c.mustKubectl("", "-n", ns, "get", "svc", "tool-nodeport", "-o", "jsonpath={.spec.ports[0].nodePort}"))
	c.eventually("the NodePort answers on the node's address", time.Minute, func() (bool, string) {
		out, err := exec.Command("busybox", "wget", "-q", "-O", "-", "http://"+c.addr+":"+port+"/").Output()
		return err == nil && string(out) == "through-the-node\n", fmt.Sprint(string(out), err)
	})
	c.eventually("the headless Service resolves to the pod", time.Minute, func() (bool, string) {
		out, err := c.kubectl("", "-n", ns, "exec", "talker", "--", "nslookup", "tool-headless."+ns+".svc.cluster.local")
		return err == nil && strings.Contains(out, tool.Status.PodIP), fmt.Sprint(out, err)
	})
}

// runtimeContainer is husk's running container of a pod's container.
func (c *cluster) runtimeContainer(ns, pod, name string) *runtimeapi.Container {
	c.t.Helper()
	resp, err := c.d.runtime.ListContainers(context.Background(), &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{
		State:         &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING},
		LabelSelector: map[string]string{"io.kubernetes.pod.namespace": ns, "io.kubernetes.pod.name": pod, "io.kubernetes.container.name": name}}})
	if err != nil || len(resp.Containers) != 1 {
		c.t.Fatalf("husk's running container %s of %s/%s: %v %v", name, ns, pod, resp.GetContainers(), err)
	}
	return resp.Containers[0]
}

// cpuQuota reads a cgroup's CFS quota as v1 or v2 writes it.
func cpuQuota(cgroup string) string {
	if unifiedHost {
		b, _ := os.ReadFile(filepath.Join("/sys/fs/cgroup", cgroup, "cpu.max"))
		q, _, _ := strings.Cut(strings.TrimSpace(string(b)), " ")
		return q
	}
	b, _ := os.ReadFile(filepath.Join("/sys/fs/cgroup/cpu", cgroup, "cpu.cfs_quota_us"))
	return strings.TrimSpace(string(b))
}

// clusterResources: the QoS classes' cgroups and limits, an OOM kill in
// the pod's status, an in-place resize without a restart.
func clusterResources(c *cluster, ns string) {
	c.mustKubectl(`apiVersion: v1
kind: Pod
metadata: {name: guaranteed}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox
    command: ["sleep", "300"]
    resources:
      requests: {cpu: 100m, memory: 64Mi}
      limits: {cpu: 100m, memory: 64Mi}
---
apiVersion: v1
kind: Pod
metadata: {name: burstable}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox
    command: ["sleep", "300"]
    resources:
      requests: {cpu: 50m, memory: 32Mi}
---
apiVersion: v1
kind: Pod
metadata: {name: besteffort}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{name: c, image: busybox, command: ["sleep", "300"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: hog}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "x=a; while true; do x=$x$x; done"]
    resources:
      limits: {memory: 32Mi}
`, "-n", ns, "apply", "-f", "-")
	c.mustKubectl("", "-n", ns, "wait", "--for=condition=Ready", "pod/guaranteed", "pod/burstable", "pod/besteffort", "--timeout=2m")
	for name, want := range map[string]string{"guaranteed": "/kubepods/pod", "burstable": "/kubepods/burstable/pod", "besteffort": "/kubepods/besteffort/pod"} {
		ctr := c.runtimeContainer(ns, name, "c")
		_, info := podStatus(c.t, c.d, ctr.PodSandboxId)
		uid := c.pods(ns, "--field-selector", "metadata.name="+name)[0].Metadata.UID
		if e2eDriver() == "systemd" {
			want = map[string]string{"guaranteed": "/kubepods.slice/kubepods-pod", "burstable": "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod",
				"besteffort": "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod"}[name]
			uid = strings.ReplaceAll(uid, "-", "_")
		}
		if !strings.HasPrefix(info.CgroupPath, want+uid) {
			c.t.Errorf("%s: pod cgroup %s, want it under %s%s", name, info.CgroupPath, want, uid)
		}
	}
	g := c.runtimeContainer(ns, "guaranteed", "c")
	cg := containerCgroup(c.t, c.d, g.Id)
	if mem, _ := cgroupLimits(cg); mem != fmt.Sprint(64<<20) || cpuQuota(cg) != "10000" {
		c.t.Errorf("the guaranteed container's cgroup: memory %s, CPU quota %s", mem, cpuQuota(cg))
	}

	// Over its memory limit: OOMKilled in the pod's status.
	c.eventually("the hog is OOM-killed", 2*time.Minute, func() (bool, string) {
		pods := c.pods(ns, "--field-selector", "metadata.name=hog")
		if len(pods) != 1 || len(pods[0].Status.ContainerStatuses) != 1 || pods[0].Status.ContainerStatuses[0].State.Terminated == nil {
			return false, fmt.Sprintf("%+v", pods)
		}
		term := pods[0].Status.ContainerStatuses[0].State.Terminated
		if term.Reason != "OOMKilled" || term.ExitCode != 137 {
			c.t.Errorf("the hog ended %+v, want OOMKilled with 137", term)
		}
		return true, ""
	})

	// In-place resize of CPU and memory, applied to the running
	// container's cgroup without a restart.
	c.mustKubectl("", "-n", ns, "patch", "pod", "guaranteed", "--subresource", "resize", "--patch",
		`{"spec":{"containers":[{"name":"c","resources":{"requests":{"cpu":"200m","memory":"96Mi"},"limits":{"cpu":"200m","memory":"96Mi"}}}]}}`)
	c.eventually("the resize reaches the cgroup", 2*time.Minute, func() (bool, string) {
		mem, _ := cgroupLimits(cg)
		return mem == fmt.Sprint(96<<20) && cpuQuota(cg) == "20000", "memory " + mem + " quota " + cpuQuota(cg)
	})
	if p := c.pods(ns, "--field-selector", "metadata.name=guaranteed")[0]; p.Status.ContainerStatuses[0].RestartCount != 0 {
		c.t.Errorf("resized with a restart: %+v", p.Status.ContainerStatuses)
	}
	if c.runtimeContainer(ns, "guaranteed", "c").Id != g.Id {
		c.t.Error("the resize replaced the container")
	}
}

// clusterImages: pull policies, a private registry's image through an
// imagePullSecret, and an image that does not exist (ErrImagePull, then
// ImagePullBackOff, with husk's reason in the event).
func clusterImages(c *cluster, ns string) {
	c.mustKubectl("", "-n", ns, "create", "secret", "docker-registry", "regcred", "--docker-server="+c.private.Host, "--docker-username=puller", "--docker-password=s3cret")
	c.mustKubectl(`apiVersion: v1
kind: Pod
metadata: {name: always}
spec:
  restartPolicy: Never
  containers: [{name: c, image: busybox, imagePullPolicy: Always, command: ["echo", "ok"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: never}
spec:
  restartPolicy: Never
  containers: [{name: c, image: busybox, imagePullPolicy: Never, command: ["echo", "ok"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: private}
spec:
  restartPolicy: Never
  imagePullSecrets: [{name: regcred}]
  containers: [{name: c, image: `+c.private.Host+`/private/busybox:v1, command: ["sh", "-c", "test $PRIVATE = yes && echo ok"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: nocred}
spec:
  containers: [{name: c, image: `+c.private.Host+`/private/busybox:v1, imagePullPolicy: Always, command: ["echo"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: missing}
spec:
  containers: [{name: c, image: busybox:does-not-exist, command: ["echo"]}]
`, "-n", ns, "apply", "-f", "-")
	for _, name := range []string{"always", "never", "private"} {
		if phase, logs := c.finished(ns, name); phase != "Succeeded" || logs != "ok\n" {
			desc, _ := c.kubectl("", "-n", ns, "describe", "pod", name)
			c.t.Errorf("pod %s: %s %q\n%s", name, phase, logs, desc)
		}
	}
	for _, name := range []string{"missing", "nocred"} {
		c.eventually(name+" backs off", 2*time.Minute, func() (bool, string) {
			out, err := c.kubectl("", "-n", ns, "get", "pod", name, "-o", "jsonpath={.status.containerStatuses[0].state.waiting.reason}")
			return err == nil && out == "ImagePullBackOff", fmt.Sprint(out, err)
		})
	}
	events := c.mustKubectl("", "-n", ns, "get", "events", "--field-selector", "involvedObject.name=missing", "-o", "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}")
	if !strings.Contains(events, "ErrImagePull") || !strings.Contains(events, "not found") {
		c.t.Errorf("events of the missing image:\n%s", events)
	}
}

// clusterImageGC runs a pod of an image that nothing will use again and
// one of an image husk pins (pinned_images), and removes them:
// clusterImageGCCollected then sees what kubelet's image garbage
// collection made of the images.
func clusterImageGC(c *cluster, ns string) {
	c.mustKubectl(`apiVersion: v1
kind: Pod
metadata: {name: unused}
spec:
  restartPolicy: Never
  containers: [{name: c, image: busybox:gc, command: ["echo", "ok"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: pinned}
spec:
  restartPolicy: Never
  containers: [{name: c, image: busybox:pinned, command: ["echo", "ok"]}]
`, "-n", ns, "apply", "-f", "-")
	for _, name := range []string{"unused", "pinned"} {
		if phase, logs := c.finished(ns, name); phase != "Succeeded" || logs != "ok\n" {
			c.t.Fatalf("pod %s: %s %q", name, phase, logs)
		}
	}
	if got := c.imageTags(); !got["docker.io/library/busybox:pinned"] {
		c.t.Fatalf("husk's images before the collection (tag: pinned): %v", got)
	}
	c.mustKubectl("", "-n", ns, "delete", "pod", "unused", "pinned", "--timeout", "2m")
	c.eventually("the pods' containers are removed", 2*time.Minute, func() (bool, string) {
		resp, err := c.d.runtime.ListContainers(context.Background(), &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{
			LabelSelector: map[string]string{"io.kubernetes.pod.namespace": ns}}})
		if err != nil {
			return false, err.Error()
		}
		return len(resp.Containers) == 0, fmt.Sprintf("%d containers", len(resp.Containers))
	})

}

// clusterImageGCCollected: kubelet's image garbage collection removed the
// image no container uses and kept the one husk pins and those in use.
func clusterImageGCCollected(c *cluster, _ string) {
	// kubelet collects every 5 minutes (its run at start-up fails: its
	// image filesystem's stats are not ready yet), so within 5 minutes
	// of its start.
	c.eventually("kubelet collects the unused image", 6*time.Minute, func() (bool, string) {
		got := c.imageTags()
		_, unused := got["docker.io/library/busybox:gc"]
		return !unused, fmt.Sprint(got)
	})
	got := c.imageTags()
	if _, ok := got["docker.io/library/busybox:pinned"]; !ok {
		c.t.Errorf("kubelet removed the pinned image: %v", got)
	}
	if _, ok := got["docker.io/library/busybox:latest"]; !ok {
		c.t.Errorf("kubelet removed an image in use: %v", got)
	}
}

// imageTags are the tags of husk's images, and whether each is pinned.
func (c *cluster) imageTags() map[string]bool {
	resp, err := c.d.images.ListImages(context.Background(), &runtimeapi.ListImagesRequest{})
	if err != nil {
		c.t.Fatal(err)
	}
	tags := map[string]bool{}
	for _, img := range resp.Images {
		for _, tag := range img.RepoTags {
			tags[tag] = img.Pinned
		}
	}
	return tags
}

// clusterRestarts: husk killed with SIGKILL and started again, then
// kubelet restarted: no container restarts, the Service still answers, and
// the logs go on.
func clusterRestarts(c *cluster, ns string) {
	c.mustKubectl(`apiVersion: apps/v1
kind: Deployment
metadata: {name: steady}
spec:
  replicas: 1
  selector: {matchLabels: {app: steady}}
  template:
    metadata: {labels: {app: steady}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: busybox
        command: ["sh", "-c", "mkdir -p /www && echo steady > /www/index.html && httpd -p 8080 -h /www; i=0; while true; do echo line $i; i=$((i+1)); sleep 0.2; done"]
        readinessProbe:
          tcpSocket: {port: 8080}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {name: steady}
spec:
  type: NodePort
  selector: {app: steady}
  ports: [{port: 80, targetPort: 8080}]
`, "-n", ns, "apply", "-f", "-")
	c.mustKubectl("", "-n", ns, "rollout", "status", "deploy/steady", "--timeout", "2m")
	port := strings.TrimSpace(c.mustKubectl("", "-n", ns, "get", "svc", "steady", "-o", "jsonpath={.spec.ports[0].nodePort}"))
	answers := func() (bool, string) {
		out, err := exec.Command("busybox", "wget", "-q", "-O", "-", "http://"+c.addr+":"+port+"/").Output()
		return err == nil && string(out) == "steady\n", fmt.Sprint(string(out), err)
	}
	c.eventually("the Service answers", time.Minute, answers)
	before := c.pods(ns, "-l", "app=steady")[0]

	_ = c.d.stop(syscall.SIGKILL)
	c.d.start()
	c.kubelet.stop(syscall.SIGTERM)
	if err := c.kubelet.start(); err != nil {
		c.t.Fatal(err)
	}
	c.eventually("the node is Ready again", 2*time.Minute, c.nodeReady)
	time.Sleep(15 * time.Second) // kubelet's first syncs of the pod after its restart
	c.eventually("the Service answers after the restarts", time.Minute, answers)
	after := c.pods(ns, "-l", "app=steady")
	if len(after) != 1 || after[0].Metadata.UID != before.Metadata.UID || after[0].Status.ContainerStatuses[0].RestartCount != 0 {
		c.t.Errorf("after husk's and kubelet's restarts: %+v, before %+v", after, before)
	}
	logs := c.mustKubectl("", "-n", ns, "logs", "deploy/steady", "--tail", "3")
	time.Sleep(time.Second)
	if again := c.mustKubectl("", "-n", ns, "logs", "deploy/steady", "--tail", "3"); again == logs || !strings.HasPrefix(again, "line ") {
		c.t.Errorf("the logs do not go on after the restarts: %q then %q", logs, again)
	}
}

// clusterLifecycle: startup probes, preStop hooks (exec, httpGet, sleep),
// a SIGTERM-ignoring container killed at the end of its grace period,
// restartPolicy OnFailure, logs -f, and the service account's token
// accepted by the API server.
func clusterLifecycle(c *cluster, ns string) {
	hooks := filepath.Join(c.dir, "hooks-"+ns)
	if err := os.MkdirAll(hooks, 0o777); err != nil {
		c.t.Fatal(err)
	}
	c.mustKubectl(`apiVersion: v1
kind: Pod
metadata: {name: slowstart}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "sleep 3; touch /tmp/started; exec sleep 300"]
    # An exec takes half a second under the test guest's emulated CPU
    # (TCG): timeouts long enough that only the file decides.
    startupProbe:
      exec: {command: ["test", "-f", "/tmp/started"]}
      periodSeconds: 1
      timeoutSeconds: 10
      failureThreshold: 30
    livenessProbe:
      exec: {command: ["test", "-f", "/tmp/started"]}
      periodSeconds: 1
      timeoutSeconds: 10
      failureThreshold: 1
---
apiVersion: v1
kind: Pod
metadata: {name: hooked}
spec:
  terminationGracePeriodSeconds: 10
  containers:
  - name: exec-hook
    image: busybox
    command: ["sh", "-c", "trap 'echo term >> /hooks/exec; exit 0' TERM; while true; do sleep 0.1; done"]
    lifecycle:
      preStop:
        exec: {command: ["sh", "-c", "echo prestop >> /hooks/exec"]}
    volumeMounts: [{name: hooks, mountPath: /hooks}]
  - name: http-hook
    image: busybox
    command: ["sh", "-c", "mkdir -p /www && echo bye > /www/prestop && httpd -f -p 8090 -h /www"]
    lifecycle:
      preStop:
        httpGet: {path: /prestop, port: 8090}
  - name: sleep-hook
    image: busybox
    command: ["sleep", "300"]
    lifecycle:
      preStop:
        sleep: {seconds: 1}
  volumes: [{name: hooks, hostPath: {path: `+hooks+`}}]
---
apiVersion: v1
kind: Pod
metadata: {name: stubborn}
spec:
  terminationGracePeriodSeconds: 3
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "trap '' TERM; while true; do sleep 0.1; done"]
---
apiVersion: v1
kind: Pod
metadata: {name: onfailure}
spec:
  restartPolicy: OnFailure
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "if [ -f /state/failed ]; then echo second; exit 0; fi; touch /state/failed; exit 1"]
    volumeMounts: [{name: state, mountPath: /state}]
  volumes: [{name: state, emptyDir: {}}]
---
apiVersion: v1
kind: Pod
metadata: {name: apiclient}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: kubectl:v1
    command:
    - sh
    - -exc
    - |
      kubectl get --raw /api | grep -q '"kind":"APIVersions"'
      kubectl auth whoami | grep -q system:serviceaccount:`+ns+`:default
      echo ok
`, "-n", ns, "apply", "-f", "-")

	// The startup probe holds the liveness probe back: no restart.
	c.mustKubectl("", "-n", ns, "wait", "--for=condition=Ready", "pod/slowstart", "pod/hooked", "pod/stubborn", "--timeout=2m")
	if p := c.pods(ns, "--field-selector", "metadata.name=slowstart")[0]; p.Status.ContainerStatuses[0].RestartCount != 0 {
		c.t.Errorf("slowstart restarted: %+v", p.Status.ContainerStatuses)
	}

	// logs -f follows.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	follow := exec.CommandContext(ctx, filepath.Join(c.bin, "kubectl"), "--kubeconfig", c.kubeconfig, "-n", ns, "logs", "-f", "onfailure")
	c.eventually("onfailure succeeds on its second run", 2*time.Minute, func() (bool, string) {
		out, err := c.kubectl("", "-n", ns, "get", "pod", "onfailure", "-o", "jsonpath={.status.phase}/{.status.containerStatuses[0].restartCount}")
		return err == nil && out == "Succeeded/1", fmt.Sprint(out, err)
	})
	if out, err := follow.Output(); err != nil || string(out) != "second\n" {
		c.t.Errorf("logs -f of a finished container: %q %v", out, err)
	}

	if phase, logs := c.finished(ns, "apiclient"); phase != "Succeeded" || !strings.HasSuffix(logs, "ok\n") {
		c.t.Errorf("the service account's token with the API server: %s\n%s", phase, logs)
	}

	// preStop hooks run before the container is told to stop, and a
	// container that ignores SIGTERM is killed once its grace is over.
	stubborn := c.runtimeContainer(ns, "stubborn", "c")
	c.mustKubectl("", "-n", ns, "delete", "pod", "hooked", "stubborn", "--wait=false")
	// Watched until kubelet removes it: how it ended. Closely: kubelet
	// removes the container of a deleted pod within a second of its end.
	var last *runtimeapi.ContainerStatus
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		st, err := c.d.runtime.ContainerStatus(context.Background(), &runtimeapi.ContainerStatusRequest{ContainerId: stubborn.Id})
		if err != nil {
			break
		}
		last = st.Status
	}
	if last == nil || last.State != runtimeapi.ContainerState_CONTAINER_EXITED || last.ExitCode != 137 {
		c.t.Errorf("the SIGTERM-ignoring container ended %v, want killed (137)", last)
	}
	c.mustKubectl("", "-n", ns, "wait", "--for=delete", "pod/hooked", "pod/stubborn", "--timeout=2m")
	if b, err := os.ReadFile(filepath.Join(hooks, "exec")); err != nil || string(b) != "prestop\nterm\n" {
		c.t.Errorf("the exec preStop hook and SIGTERM: %q %v", b, err)
	}
	// kubelet's httpGet hook asked the container for /prestop.
	logs := c.mustKubectl("", "-n", ns, "get", "events", "--field-selector", "involvedObject.name=hooked", "-o", "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}")
	if strings.Contains(logs, "FailedPreStopHook") {
		c.t.Errorf("a preStop hook failed:\n%s", logs)
	}
}
