package report

import (
	"fmt"
	"image/color"
	"io"
	"strconv"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"
)

// PlotPhases are the panels of the plot, top to bottom.
var PlotPhases = []string{Total, Knative}

var sideColors = []color.Color{
	color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}, // first side (upstream in --compare)
	color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff},
	color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
}

// levelTicks labels the box groups with their parallelism.
type levelTicks []int

func (l levelTicks) Ticks(min, max float64) []plot.Tick {
	out := make([]plot.Tick, len(l))
	for i, lvl := range l {
		out[i] = plot.Tick{Value: float64(i), Label: strconv.Itoa(lvl) + " at once"}
	}
	return out
}

// swatch is a legend entry: a filled square of the side's colour.
type swatch struct{ c color.Color }

func (s swatch) Thumbnail(c *draw.Canvas) {
	c.FillPolygon(s.c, []vg.Point{{X: c.Min.X, Y: c.Min.Y}, {X: c.Max.X, Y: c.Min.Y}, {X: c.Max.X, Y: c.Max.Y}, {X: c.Min.X, Y: c.Max.Y}})
}

// panel draws one phase: per level a box per side, side by side.
func panel(samples []Sample, phaseName string) (*plot.Plot, error) {
	ph, ok := PhaseByName(phaseName)
	if !ok {
		return nil, fmt.Errorf("no phase %q", phaseName)
	}
	p := plot.New()
	p.Title.Text = phaseName + " latency"
	if phaseName == Knative {
		p.Title.Text = "Knative-attributable latency (request→scale + qp_up→first_byte)"
	}
	p.Y.Label.Text = "ms"
	p.Y.Min = 0 // ratios read honestly only from a zero baseline
	levels, sides := Levels(samples), Sides(samples)
	p.X.Tick.Marker = levelTicks(levels)
	p.X.Min, p.X.Max = -0.6, float64(len(levels))-0.4
	p.Legend.Top = true
	width := vg.Points(60 / float64(max(1, len(sides))))
	for si, side := range sides {
		seen := false
		for li, lvl := range levels {
			vals := ph.Values(filter(samples, side, lvl))
			if len(vals) == 0 {
				continue
			}
			v := make(plotter.Values, len(vals))
			for i, d := range vals {
				v[i] = float64(d) / float64(time.Millisecond)
			}
			off := (float64(si) - float64(len(sides)-1)/2) * 0.8 / float64(max(1, len(sides)))
			b, err := plotter.NewBoxPlot(width, float64(li)+off, v)
			if err != nil {
				return nil, err
			}
			b.FillColor = sideColors[si%len(sideColors)]
			p.Add(b)
			seen = true
		}
		if seen {
			p.Legend.Add(side, swatch{sideColors[si%len(sideColors)]})
		}
	}
	return p, nil
}

// Format is an output format of the plot.
type Format string

// Plot formats.
const (
	SVG Format = "svg"
	PNG Format = "png"
)

// WritePlot draws the panels of PlotPhases for samples (boxes per level and side) in format f.
func WritePlot(w io.Writer, samples []Sample, f Format) error {
	plots := make([][]*plot.Plot, len(PlotPhases))
	for i, ph := range PlotPhases {
		p, err := panel(samples, ph)
		if err != nil {
			return err
		}
		plots[i] = []*plot.Plot{p}
	}
	wd, ht := 8*vg.Inch, vg.Length(4*len(PlotPhases))*vg.Inch
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
	tiles := draw.Tiles{Rows: len(PlotPhases), Cols: 1, PadX: vg.Millimeter, PadY: 4 * vg.Millimeter,
		PadTop: 2 * vg.Millimeter, PadBottom: 2 * vg.Millimeter, PadLeft: 2 * vg.Millimeter, PadRight: 2 * vg.Millimeter}
	cs := plot.Align(plots, tiles, canvas)
	for i := range plots {
		plots[i][0].Draw(cs[i][0])
	}
	_, err := out.WriteTo(w)
	return err
}
