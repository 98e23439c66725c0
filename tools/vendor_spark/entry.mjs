// Entry of web/vendor/spark_three.js: three.js and the parts of Spark the VIST3A viewer uses, one ES module.
export * as THREE from "three";
export { SparkRenderer, SplatMesh, SplatFileType } from "@sparkjsdev/spark";
