package report

import (
	"fmt"
	"image/color"
	"io"
	"math"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"
)

// Format is an output format of the plot.
type Format string

// Plot formats.
const (
	SVG Format = "svg"
	PNG Format = "png"
)

// WritePareto draws each policy as a point: idle memory (GB-s) across,
// the 75th percentile of per-function cold-start % up. Lower left is
// better on both axes.
func WritePareto(w io.Writer, sums []Summary, f Format) error {
	p := plot.New()
	p.Title.Text = "Cold starts against idle memory, per policy"
	p.X.Label.Text = "idle memory (GB·s, pod time not serving × function memory)"
	p.Y.Label.Text = "per-function cold-start %, 75th percentile"
	p.X.Min, p.Y.Min = 0, 0 // ratios read honestly only from zero
	pts := make(plotter.XYs, 0, len(sums))
	labels := make([]string, 0, len(sums))
	var maxX, maxY float64
	for _, s := range sums {
		if math.IsNaN(s.ColdPctP75) {
			continue
		}
		pts = append(pts, plotter.XY{X: s.IdleMemoryGBs, Y: s.ColdPctP75})
		labels = append(labels, s.Policy)
		maxX, maxY = max(maxX, s.IdleMemoryGBs), max(maxY, s.ColdPctP75)
	}
	if len(pts) == 0 {
		return fmt.Errorf("no policy with requests to plot")
	}
	p.X.Max, p.Y.Max = maxX*1.15+1, maxY*1.1+1
	sc, err := plotter.NewScatter(pts)
	if err != nil {
		return err
	}
	sc.GlyphStyle.Shape = draw.CircleGlyph{}
	sc.GlyphStyle.Radius = vg.Points(4)
	sc.GlyphStyle.Color = color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}
	lb, err := plotter.NewLabels(plotter.XYLabels{XYs: pts, Labels: labels})
	if err != nil {
		return err
	}
	for i := range lb.TextStyle {
		lb.TextStyle[i].XAlign = draw.XLeft
	}
	lb.Offset = vg.Point{X: vg.Points(6), Y: vg.Points(2)}
	p.Add(plotter.NewGrid(), sc, lb)

	wd, ht := 8*vg.Inch, 5*vg.Inch
	var (
		canvas draw.Canvas
		out    io.WriterTo
	)
	switch f {
	case SVG:
		c := vgsvg.New(wd, ht)
		canvas, out = draw.New(c), c
	case PNG:
		c := vgimg.New(wd, ht)
		canvas, out = draw.New(c), vgimg.PngCanvas{Canvas: c}
	default:
		return fmt.Errorf("unknown plot format %q", f)
	}
	p.Draw(canvas)
	_, err = out.WriteTo(w)
	return err
}
