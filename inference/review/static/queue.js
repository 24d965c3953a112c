// parcelscan review: the queue page. R starts reviewing the filtered queue.
"use strict";

document.addEventListener("keydown", (event) => {
  const target = event.target;
  if (target && (target.tagName === "INPUT" || target.tagName === "SELECT" || target.tagName === "TEXTAREA")) return;
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (event.key === "r" || event.key === "R") {
    event.preventDefault();
    window.location.href = document.getElementById("start").getAttribute("href");
  }
});
