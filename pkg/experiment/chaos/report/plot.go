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

// Format of a plot file.
type Format string

// Plot formats.
const (
	SVG Format = "svg"
	PNG Format = "png"
)

var (
	okColor     = color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff}
	errColor    = color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}
	scaleColor  = color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}
	faultColor  = color.RGBA{R: 0x7f, G: 0x7f, B: 0x7f, A: 0xff}
	windowColor = color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff}
	readyColor  = color.RGBA{R: 0x94, G: 0x67, B: 0xbd, A: 0xff}
)

// perSecond bins the run's requests by second since its start: ok and failed (lost or expected).
func (r *Run) perSecond() (ok, failed plotter.XYs) {
	n := int(math.Ceil(r.End.Sub(r.Start).Seconds())) + 1
	okc, failc := make([]float64, n), make([]float64, n)
	for _, o := range r.Outcomes {
		i := int(o.Send.Sub(r.Start).Seconds())
		if i < 0 || i >= n {
			continue
		}
		if o.Failed() {
			failc[i]++
		} else {
			okc[i]++
		}
	}
	for i := range n {
		ok = append(ok, plotter.XY{X: float64(i), Y: okc[i]})
		failed = append(failed, plotter.XY{X: float64(i), Y: failc[i]})
	}
	return ok, failed
}

// timeline is one run's panel: requests/s, lost requests/s, the steady service's desired scale, a
// mark per injection and the fault window's bounds.
func timeline(r *Run) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("%s — %s: %d/%d lost", r.Scenario, r.Side, r.Summary.All.Failed, r.Summary.All.Total)
	p.X.Label.Text = "s since the loads started"
	p.Y.Label.Text = "requests/s, pods"
	p.Y.Min = 0
	p.Legend.Top = true
	ok, failed := r.perSecond()
	var scale, ready plotter.XYs
	top := 1.0
	for _, x := range r.Scale {
		if x.PA == r.Steady {
			scale = append(scale, plotter.XY{X: x.Time.Sub(r.Start).Seconds(), Y: float64(x.Desired)})
			ready = append(ready, plotter.XY{X: x.Time.Sub(r.Start).Seconds(), Y: float64(x.Actual)})
			top = max(top, float64(x.Desired), float64(x.Actual))
		}
	}
	for _, xy := range ok {
		top = max(top, xy.Y)
	}
	for _, s := range []struct {
		name string
		xys  plotter.XYs
		c    color.Color
	}{{"ok/s", ok, okColor}, {"failed/s", failed, errColor}, {"steady desired scale", scale, scaleColor}, {"steady ready pods", ready, readyColor}} {
		if len(s.xys) == 0 {
			continue
		}
		l, err := plotter.NewLine(s.xys)
		if err != nil {
			return nil, err
		}
		l.Color = s.c
		p.Add(l)
		p.Legend.Add(s.name, l)
	}
	vline := func(x float64, c color.Color, dashed bool) error {
		l, err := plotter.NewLine(plotter.XYs{{X: x, Y: 0}, {X: x, Y: top * 1.05}})
		if err != nil {
			return err
		}
		l.Color = c
		if dashed {
			l.Dashes = []vg.Length{vg.Points(2), vg.Points(2)}
		}
		p.Add(l)
		return nil
	}
	for _, m := range r.Marks {
		if m.Kind == "inject" {
			if err := vline(m.Time.Sub(r.Start).Seconds(), faultColor, true); err != nil {
				return nil, err
			}
		}
	}
	for _, t := range []float64{r.FaultStart.Sub(r.Start).Seconds(), r.FaultEnd.Sub(r.Start).Seconds()} {
		if !r.FaultStart.IsZero() {
			if err := vline(t, windowColor, false); err != nil {
				return nil, err
			}
		}
	}
	return p, nil
}

// WritePlot draws one timeline panel per run, top to bottom.
func WritePlot(w io.Writer, runs []*Run, f Format) error {
	if len(runs) == 0 {
		return fmt.Errorf("no run to plot")
	}
	plots := make([][]*plot.Plot, len(runs))
	for i, r := range runs {
		p, err := timeline(r)
		if err != nil {
			return err
		}
		plots[i] = []*plot.Plot{p}
	}
	wd, ht := 10*vg.Inch, vg.Length(3*len(runs))*vg.Inch
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
	tiles := draw.Tiles{Rows: len(runs), Cols: 1, PadX: vg.Millimeter, PadY: 4 * vg.Millimeter,
		PadTop: 2 * vg.Millimeter, PadBottom: 2 * vg.Millimeter, PadLeft: 2 * vg.Millimeter, PadRight: 2 * vg.Millimeter}
	cs := plot.Align(plots, tiles, canvas)
	for i := range plots {
		plots[i][0].Draw(cs[i][0])
	}
	_, err := out.WriteTo(w)
	return err
}
