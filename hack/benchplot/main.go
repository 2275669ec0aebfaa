// Command benchplot draws the scale curve of BenchmarkCompareScale
// (test/e2e/compare_scale_bench_test.go) from the scale.csv it writes: one
// PNG per measure, husk and containerd on one chart against the number of
// pods. `make bench-compare` runs it; it is a module of its own so that
// the plotting library stays out of husk's.
//
//	go run . IN.csv OUTDIR
package main

import (
	"encoding/csv"
	"fmt"
	"image/color"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// charts names, for each PNG, the measures it draws and its axis.
var charts = []chart{
	{"scale-list.png", "ListPodSandbox and ListContainers (p50)", "ms", []string{"ListPodSandbox_ms", "ListContainers_ms"}, false},
	// containerd's pod stats take seconds where husk's take tenths: a log
	// scale shows both.
	{"scale-stats.png", "Stats and metrics lists (p50, log scale)", "ms", []string{"ListContainerStats_ms", "ListPodSandboxStats_ms", "ListPodSandboxMetrics_ms"}, true},
	{"scale-memory.png", "Daemon RSS", "MiB", []string{"daemon_rss_mib"}, false},
}

type chart struct {
	file, title, yLabel string
	metrics             []string
	log                 bool
}

type key struct{ runtime, metric string }

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: benchplot IN.csv OUTDIR")
		os.Exit(2)
	}
	series, err := read(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchplot:", err)
		os.Exit(1)
	}
	for _, c := range charts {
		if err := draw(series, os.Args[2], c); err != nil {
			fmt.Fprintln(os.Stderr, "benchplot:", err)
			os.Exit(1)
		}
	}
}

// read loads runtime,pods,metric,value rows.
func read(path string) (map[key]plotter.XYs, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	series := map[key]plotter.XYs{}
	for i, r := range rows {
		if i == 0 || len(r) != 4 {
			continue
		}
		pods, err1 := strconv.ParseFloat(r[1], 64)
		v, err2 := strconv.ParseFloat(r[3], 64)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("%s: line %d: %q", path, i+1, strings.Join(r, ","))
		}
		k := key{r[0], r[2]}
		series[k] = append(series[k], plotter.XY{X: pods, Y: v})
	}
	return series, nil
}

func draw(series map[key]plotter.XYs, dir string, c chart) error {
	metrics := c.metrics
	p := plot.New()
	p.Title.Text = c.title
	p.X.Label.Text = "running pods (2 containers each)"
	p.Y.Label.Text = c.yLabel
	p.Legend.Top, p.Legend.Left = true, true
	if c.log {
		p.Y.Scale, p.Y.Tick.Marker = plot.LogScale{}, plot.LogTicks{Prec: -1}
	}
	var keys []key
	for k := range series {
		if slices.Contains(metrics, k.metric) {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, func(a, b key) int { return strings.Compare(a.runtime+a.metric, b.runtime+b.metric) })
	for _, k := range keys {
		line, points, err := plotter.NewLinePoints(series[k])
		if err != nil {
			return err
		}
		// A colour per measure; containerd's line dashed.
		col := palette[slices.Index(metrics, k.metric)%len(palette)]
		line.Color, points.Color = col, col
		if k.runtime != "husk" {
			line.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		}
		p.Add(line, points)
		p.Legend.Add(k.runtime+" "+strings.TrimSuffix(strings.TrimSuffix(k.metric, "_ms"), "_mib"), line, points)
	}
	return p.Save(16*vg.Centimeter, 10*vg.Centimeter, filepath.Join(dir, c.file))
}

var palette = []color.Color{
	color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
	color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
	color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
	color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff},
	color.RGBA{R: 0x94, G: 0x67, B: 0xbd, A: 0xff},
	color.RGBA{R: 0x8c, G: 0x56, B: 0x4b, A: 0xff},
}
