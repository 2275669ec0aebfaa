package network

import (
	"math"
	"strings"
	"testing"
)

func TestBandwidthFromAnnotations(t *testing.T) {
	for _, tc := range []struct {
		in      map[string]string
		want    *Bandwidth
		wantErr string
	}{
		{in: nil, want: nil},
		{in: map[string]string{"other": "1"}, want: nil},
		{
			in:   map[string]string{IngressBandwidthAnnotation: "10M"},
			want: &Bandwidth{IngressRate: 10_000_000, IngressBurst: 10_000_000},
		},
		{
			in:   map[string]string{EgressBandwidthAnnotation: "1k"},
			want: &Bandwidth{EgressRate: 1000, EgressBurst: 72000},
		},
		{
			in: map[string]string{IngressBandwidthAnnotation: "1.5Gi", EgressBandwidthAnnotation: "1P"},
			want: &Bandwidth{
				IngressRate: 1610612736, IngressBurst: 1610612736,
				EgressRate: 1_000_000_000_000_000, EgressBurst: math.MaxUint32,
			},
		},
		{in: map[string]string{IngressBandwidthAnnotation: "1e6"}, want: &Bandwidth{IngressRate: 1e6, IngressBurst: 1e6}},
		{in: map[string]string{IngressBandwidthAnnotation: "2E3"}, want: &Bandwidth{IngressRate: 2000, IngressBurst: 72000}},
		{in: map[string]string{IngressBandwidthAnnotation: "1000001m"}, want: &Bandwidth{IngressRate: 1001, IngressBurst: 72000}}, // rounded up
		{in: map[string]string{IngressBandwidthAnnotation: ".5M"}, want: &Bandwidth{IngressRate: 500_000, IngressBurst: 500_000}},
		{in: map[string]string{IngressBandwidthAnnotation: "999"}, wantErr: IngressBandwidthAnnotation + `="999": bandwidth is unreasonably small`},
		{in: map[string]string{EgressBandwidthAnnotation: "1.1P"}, wantErr: EgressBandwidthAnnotation + `="1.1P": bandwidth is unreasonably large`},
		{in: map[string]string{EgressBandwidthAnnotation: "1Pi"}, wantErr: "unreasonably large"},
		{in: map[string]string{EgressBandwidthAnnotation: "1e100"}, wantErr: "unreasonably large"},
		{in: map[string]string{EgressBandwidthAnnotation: "-10M"}, wantErr: "unreasonably small"},
		{in: map[string]string{IngressBandwidthAnnotation: "10X"}, wantErr: IngressBandwidthAnnotation + `="10X": not a valid quantity`},
		{in: map[string]string{IngressBandwidthAnnotation: ""}, wantErr: "not a valid quantity"},
		{in: map[string]string{IngressBandwidthAnnotation: "M"}, wantErr: "not a valid quantity"},
		{in: map[string]string{IngressBandwidthAnnotation: "10 M"}, wantErr: "not a valid quantity"},
		{in: map[string]string{IngressBandwidthAnnotation: "1e"}, wantErr: "not a valid quantity"},
		{in: map[string]string{IngressBandwidthAnnotation: "1/2"}, wantErr: "not a valid quantity"},
		{in: map[string]string{IngressBandwidthAnnotation: "10M", EgressBandwidthAnnotation: "bad"}, wantErr: EgressBandwidthAnnotation},
	} {
		got, err := BandwidthFromAnnotations(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%v: error %v, want one containing %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%v: %v", tc.in, err)
			continue
		}
		if (got == nil) != (tc.want == nil) || got != nil && *got != *tc.want {
			t.Errorf("%v: got %+v, want %+v", tc.in, got, tc.want)
		}
	}
}
