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

// palette colours the policies in turn.
var palette = []color.Color{
	color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
	color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff},
	color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
	color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
	color.RGBA{R: 0x94, G: 0x67, B: 0xbd, A: 0xff},
	color.RGBA{R: 0x8c, G: 0x56, B: 0x4b, A: 0xff},
	color.RGBA{R: 0xe3, G: 0x77, B: 0xc2, A: 0xff},
	color.RGBA{R: 0x7f, G: 0x7f, B: 0x7f, A: 0xff},
}

var shapes = []draw.GlyphDrawer{draw.CircleGlyph{}, draw.SquareGlyph{}, draw.TriangleGlyph{}, draw.PyramidGlyph{}, draw.RingGlyph{}, draw.BoxGlyph{}, draw.CrossGlyph{}, draw.PlusGlyph{}}

// WritePareto draws each policy as a point: idle memory across, the 75th
// percentile of per-function cold-start % up. Lower left is better on both
// axes; each policy has its own colour and shape, named in the legend.
func WritePareto(w io.Writer, sums []Summary, f Format) error {
	p := plot.New()
	p.Title.Text = "Cold starts against idle memory, per policy"
	p.X.Label.Text = "idle memory, 10³ GB·s (pod time not serving × function memory)"
	p.Y.Label.Text = "per-function cold-start %, 75th percentile"
	p.X.Min, p.Y.Min = 0, 0 // ratios read honestly only from zero
	p.Legend.Top = true
	p.Legend.Left = true
	var maxX, maxY float64
	n := 0
	for i, s := range sums {
		if math.IsNaN(s.ColdPctP75) {
			continue
		}
		x := s.IdleMemoryGBs / 1000
		sc, err := plotter.NewScatter(plotter.XYs{{X: x, Y: s.ColdPctP75}})
		if err != nil {
			return err
		}
		sc.GlyphStyle.Shape = shapes[i%len(shapes)]
		sc.GlyphStyle.Radius = vg.Points(5)
		sc.GlyphStyle.Color = palette[i%len(palette)]
		p.Add(sc)
		p.Legend.Add(fmt.Sprintf("%s (%.1f%%, %.0f)", s.Policy, s.ColdPctP75, x), sc)
		maxX, maxY = max(maxX, x), max(maxY, s.ColdPctP75)
		n++
	}
	if n == 0 {
		return fmt.Errorf("no policy with requests to plot")
	}
	p.X.Max, p.Y.Max = maxX*1.1+1, maxY*1.1+1
	p.Add(plotter.NewGrid())

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
	_, err := out.WriteTo(w)
	return err
}
