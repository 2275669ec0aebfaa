package sandbox

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
	"strings"

	"github.com/husk-runtime/husk/network/ns"
)

// Interface is what one network interface of a pod has moved.
type Interface struct {
	Name                                    string
	RxBytes, RxPackets, RxErrors, RxDropped uint64
	TxBytes, TxPackets, TxErrors, TxDropped uint64
}

// podInterfaces reads the interfaces of the network namespace pinned at
// path (its /proc/net/dev), the loopback aside as cAdvisor leaves it.
func podInterfaces(path string) ([]Interface, error) {
	var data []byte
	err := ns.Do(map[ns.Type]string{ns.Net: path}, func() error {
		var err error
		data, err = os.ReadFile("/proc/thread-self/net/dev")
		return err
	})
	if err != nil {
		return nil, err
	}
	var out []Interface
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		name = strings.TrimSpace(name)
		if !ok || name == "lo" {
			continue
		}
		f := strings.Fields(rest)
		if len(f) < 12 {
			continue
		}
		v := make([]uint64, 12)
		for i := range v {
			v[i], _ = strconv.ParseUint(f[i], 10, 64)
		}
		// receive: bytes packets errs drop fifo frame compressed
		// multicast; transmit: bytes packets errs drop ...
		out = append(out, Interface{Name: name,
			RxBytes: v[0], RxPackets: v[1], RxErrors: v[2], RxDropped: v[3],
			TxBytes: v[8], TxPackets: v[9], TxErrors: v[10], TxDropped: v[11]})
	}
	return out, sc.Err()
}
