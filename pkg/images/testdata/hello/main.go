// Command hello is a tiny main package the image tests compile for several platforms.
package main

import "fmt"

func main() { fmt.Println("hello") }
