package network

import (
	"fmt"
	"math"
	"math/big"
	"strconv"
)

// The pod annotations kubelet (and the bandwidth plugin's users) read for
// traffic shaping.
const (
	IngressBandwidthAnnotation = "kubernetes.io/ingress-bandwidth"
	EgressBandwidthAnnotation  = "kubernetes.io/egress-bandwidth"
)

// kubelet's bounds for the annotations.
const (
	minBandwidth = 1_000                 // 1k
	maxBandwidth = 1_000_000_000_000_000 // 1P
)

// Bandwidth is the bandwidth plugin's runtimeConfig: rates in bits per
// second, bursts in bits. A zero rate means no limit in that direction.
type Bandwidth struct {
	IngressRate, IngressBurst uint64
	EgressRate, EgressBurst   uint64
}

// BandwidthFromAnnotations returns nil when neither annotation is set, and an
// error naming the annotation when one is malformed or outside kubelet's
// limits (1k..1P).
//
// The annotations give only a rate; the burst is chosen here (see
// burstFor).
func BandwidthFromAnnotations(a map[string]string) (*Bandwidth, error) {
	var bw Bandwidth
	set := false
	for _, d := range []struct {
		key         string
		rate, burst *uint64
	}{
		{IngressBandwidthAnnotation, &bw.IngressRate, &bw.IngressBurst},
		{EgressBandwidthAnnotation, &bw.EgressRate, &bw.EgressBurst},
	} {
		v, ok := a[d.key]
		if !ok {
			continue
		}
		rate, err := parseBandwidth(v)
		if err != nil {
			return nil, fmt.Errorf("annotation %s=%q: %w", d.key, v, err)
		}
		*d.rate, *d.burst = rate, burstFor(rate)
		set = true
	}
	if !set {
		return nil, nil
	}
	return &bw, nil
}

// burstFor gives one second's worth of traffic, at least 9000 bytes (a jumbo
// frame: a token bucket smaller than a packet never lets it through) and at
// most 2^32-1 bits (what containerd passes; the plugin refuses 4 GB and up).
//
// containerd passes that maximum for every rate (dockershim passed 2^31-1),
// but the plugin converts
// burst/rate to kernel ticks in a uint32 (about 274 s at this kernel's 15.625
// ticks per µs), which overflows below ~15 Mbit/s and leaves an arbitrary
// bucket. This keeps burst/rate at 72 s or less for every rate kubelet accepts.
func burstFor(rate uint64) uint64 {
	return min(max(rate, 9000*8), math.MaxUint32)
}

// parseBandwidth parses a Kubernetes resource quantity
// (<sign><digits>[.<digits>]<suffix>, suffix one of the binary Ki..Ei, the
// decimal n u m "" k M G T P E, or an exponent e<int>/E<int>) and rounds it
// up to an integer as Quantity.Value does. It is written here rather than
// taken from k8s.io/apimachinery to keep that module (and what it pulls in)
// out of the daemon for one function.
func parseBandwidth(s string) (uint64, error) {
	q, err := parseQuantity(s)
	if err != nil {
		return 0, err
	}
	v := ceilRat(q)
	switch {
	case v.Cmp(big.NewInt(minBandwidth)) < 0:
		return 0, fmt.Errorf("bandwidth is unreasonably small (< 1kbit)")
	case v.Cmp(big.NewInt(maxBandwidth)) > 0:
		return 0, fmt.Errorf("bandwidth is unreasonably large (> 1Pbit)")
	}
	return v.Uint64(), nil
}

var (
	binarySuffixes  = map[string]uint{"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
	decimalSuffixes = map[string]int{"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
)

func parseQuantity(s string) (*big.Rat, error) {
	bad := fmt.Errorf("not a valid quantity (like 10M or 1.5Gi)")
	i := 0
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		i++
	}
	intStart := i
	for i < len(s) && isDigit(s[i]) {
		i++
	}
	digits := i - intStart
	if i < len(s) && s[i] == '.' {
		i++
		fracStart := i
		for i < len(s) && isDigit(s[i]) {
			i++
		}
		digits += i - fracStart
	}
	if digits == 0 {
		return nil, bad
	}
	num, ok := new(big.Rat).SetString(s[:i])
	if !ok {
		return nil, bad
	}
	suffix := s[i:]

	if shift, ok := binarySuffixes[suffix]; ok {
		return num.Mul(num, new(big.Rat).SetInt(new(big.Int).Lsh(big.NewInt(1), shift))), nil
	}
	exp, ok := decimalSuffixes[suffix]
	if !ok {
		if len(suffix) < 2 || (suffix[0] != 'e' && suffix[0] != 'E') {
			return nil, bad
		}
		e, err := strconv.Atoi(suffix[1:])
		if err != nil {
			return nil, bad
		}
		// Anything this far out is out of range anyway; keep the
		// arithmetic small.
		exp = max(min(e, 40), -40)
	}
	pow := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(abs(exp))), nil)
	if exp >= 0 {
		return num.Mul(num, new(big.Rat).SetInt(pow)), nil
	}
	return num.Quo(num, new(big.Rat).SetInt(pow)), nil
}

// ceilRat rounds towards +infinity.
func ceilRat(r *big.Rat) *big.Int {
	q, m := new(big.Int).QuoRem(r.Num(), r.Denom(), new(big.Int))
	if m.Sign() > 0 {
		q.Add(q, big.NewInt(1))
	}
	return q
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}
